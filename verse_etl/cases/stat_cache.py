"""Source-file digests reused while a file's stat is unchanged: a rerun hashes only what changed.

A case's key holds the sha256 of each of its source files (:mod:`verse_etl.cases.hashing`), so an
unchanged case used to cost a full read of its files on every build (1.4 GB for 16 real-size
cases). Like git's index and DVC's state database, each case keeps a small file beside its
result, ``<out>/digests/<source>/<case>.json`` (:func:`verse_etl.paths.digest_cache_path`),
mapping each file to the stat it had when it was hashed and the digest: a file whose
``(size, mtime_ns, ctime_ns, inode, device)`` are all unchanged is not read again.

What the stat sees: any write (size, mtime and ctime change), a file replaced by another (inode),
a restored mtime (``touch -d``, ``cp -p``, ``rsync -t``, ``git checkout``: the ctime changes
whenever the mtime is set, and cannot be set back), another disk (device). A zip member is
taken as changed when its archive's stat changes.

What it cannot see (then ``--rehash`` / ``build.rehash: true`` hashes every file): a file
changed by something that does not update the ctime (writes to the raw block device, a clock
set back to the second of the recorded ctime, a network file system whose server does not keep
ctimes); a stat that could not tell two writes apart in the same timestamp tick is guarded
against by recording only files whose mtime and ctime are older than :data:`SETTLE_NS` (or, on a
file system with whole-second timestamps, :data:`SETTLE_COARSE_NS`) when they are hashed: a file
written just before the build is hashed again next time. DVC makes the same trade-off with
``(inode, mtime, size)``, without the ctime.

The cache is invalidated by the code version (the identity of this module's code closure, as
the case cache is by :func:`verse_etl.cases.hashing.case_code_identity`) and written atomically; a
missing, unreadable or foreign cache only costs hashing. It is local state of a build folder
(inodes mean nothing elsewhere): not a DVC output, never uploaded with a URL build.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import NamedTuple

from verse_etl.cases.hashing import code_identity, sha256_file
from verse_etl.cases.records import write_text_atomic

# The settle rule's times, named here as before (the docstring and tests use them).
from verse_etl.cases.settle import SETTLE_COARSE_NS as SETTLE_COARSE_NS
from verse_etl.cases.settle import SETTLE_NS as SETTLE_NS
from verse_etl.cases.settle import settled
from verse_etl.io.files import SourceFile

FORMAT = 1


class FileStat(NamedTuple):
    """What ``os.stat`` says about a file that tells one version of it from another; a tuple in
    the order a cache entry records it (``[*stat, digest]``)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        """The stat of ``path`` (links followed, as reading the file does)."""
        return cls(*_stat_fields(os.stat(path)))

    def settled(self, now_ns: int) -> bool:
        """True if the file was last changed long enough before ``now_ns`` for its stat to
        tell any later change apart (see :data:`SETTLE_NS`)."""
        return settled(self.mtime_ns, self.ctime_ns, now_ns)


def _identity() -> str:
    import verse_etl

    return code_identity(Path(verse_etl.__file__).resolve().parent.parent, (__name__,))


class DigestCache:
    """The sha256 of one case's source files, reused while each file's stat is unchanged.

    Parameters
    ----------
    path
        The case's cache file (:func:`verse_etl.paths.digest_cache_path`).
    rehash
        Hash every file, whatever the cache says (the cache is rewritten from the new digests).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "a.txt").write_bytes(b"abc")
    3
    >>> cache = DigestCache(folder / "digests.json")
    >>> cache.sha256(folder / "a.txt")[:16], cache.hashed
    ('ba7816bf8f01cfea', 1)
    """

    def __init__(self, path: Path, rehash: bool = False) -> None:
        self.path = path
        self.rehash = rehash
        self.hashed = 0  # files read and hashed by this object
        self.reused = 0  # digests taken from the cache
        self._old: dict[str, list] = {} if rehash else self._load()
        self._new: dict[str, list] = {}

    def _load(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT or data.get("code") != _identity():
                return {}
            entries = data["entries"]
            return entries if isinstance(entries, dict) else {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}  # no cache, or an unreadable one: everything is hashed

    def sha256(self, file: Path | SourceFile) -> str:
        """sha256 of the file's bytes (a zip member's uncompressed bytes), from the cache if the
        file (a member's archive) has the stat it had when it was hashed."""
        source = file if isinstance(file, SourceFile) else SourceFile(Path(file))
        key = _key(source.path, source.member)
        try:
            before = FileStat.of(source.path)
        except OSError:  # missing or unreadable: the read below raises the reader's own error
            self.hashed += 1
            return _sha256(file)
        entry = self._old.get(key)
        if entry is not None and entry[:5] == list(before):
            self.reused += 1
            self._new[key] = entry
            return str(entry[5])
        start = time.time_ns()
        digest = _sha256(file)
        self.hashed += 1
        # Recorded only if nothing touched the file while it was read, and it is old enough for
        # a later write to show in its stat.
        if FileStat.of(source.path) == before and before.settled(start):
            self._new[key] = [*before, digest]
        return digest

    def cached_sha256(self, file: Path | SourceFile) -> str | None:
        """The recorded digest if the file (a member's archive) has the stat it had when it was
        hashed; None otherwise (the file would be read): nothing is read or recorded."""
        # Called for every file of every unchanged case at each build: a plain path is keyed
        # and compared as it is (no SourceFile, Path or FileStat made: 3x faster), as sha256 does.
        path, member = (file.path, file.member) if isinstance(file, SourceFile) else (file, None)
        entry = self._old.get(_key(path, member))
        if entry is None:
            return None
        try:
            same = entry[:5] == list(_stat_fields(os.stat(path)))
        except OSError:
            return None
        return str(entry[5]) if same else None

    def save(self) -> None:
        """Write the entries looked up through this object (and only those: files no longer
        part of the case drop out), atomically."""
        text = json.dumps(
            {"format": FORMAT, "code": _identity(), "entries": dict(sorted(self._new.items()))},
            indent=0,
        )
        write_text_atomic(self.path, text)


def _stat_fields(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells one version of a file from another, in :class:`FileStat`'s order."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _key(path: Path | str, member: str | None) -> str:
    """A cache entry's key: the file's absolute path, and a zip member's name after a NUL."""
    return os.path.abspath(path) + (f"\0{member}" if member else "")


def _sha256(file: Path | SourceFile) -> str:
    """The digest as the callers took it before this cache (same reads, same errors): a
    :class:`SourceFile` refuses special files and names what it cannot open."""
    return file.sha256() if isinstance(file, SourceFile) else sha256_file(Path(file))
