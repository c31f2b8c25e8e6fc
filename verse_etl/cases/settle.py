"""When a file's stat can be trusted to tell a later change apart (git's "racy clean" problem).

A file changed twice within one timestamp tick keeps its stat. A stat is therefore trusted only
if the file was last changed (mtime and ctime) long enough before the moment it was taken. The
source-digest caches (:mod:`verse_etl.cases.stat_cache`) and the build stamp
(:mod:`verse_etl.publish.stamp`) follow this one rule. Standard library only: the stamp answers
a no-change build before anything heavy is imported.
"""

from __future__ import annotations

SETTLE_NS = 100_000_000
"""A file is trusted if its mtime and ctime are this much older than the moment its stat was
taken (100 ms: Linux stamps files from a clock that ticks every 1-10 ms)."""
SETTLE_COARSE_NS = 2_000_000_000
"""The same on a file system with whole-second timestamps (ext3, FAT's 2 s, some NFS servers)."""


def settled(mtime_ns: int, ctime_ns: int, now_ns: int) -> bool:
    """True if a file last changed at ``mtime_ns`` / ``ctime_ns`` changed long enough before
    ``now_ns`` for its stat to tell any later change apart."""
    coarse = mtime_ns % 1_000_000_000 == 0 and ctime_ns % 1_000_000_000 == 0
    settle = SETTLE_COARSE_NS if coarse else SETTLE_NS
    return max(mtime_ns, ctime_ns) < now_ns - settle
