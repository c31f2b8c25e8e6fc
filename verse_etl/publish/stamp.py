"""The build stamp: a no-change ``verse-etl build`` answered from file stats, like git's index.

:func:`verse_etl.publish.current.unchanged_build` answers "would a build change anything?"
thoroughly, but it pays for it: the case modules' imports (pandas, pandera, pydicom, scipy,
zarr), every case key with the code identity of its writers, every saved result and table key
(~2.5 s on the real-size benchmark sample, 10% of its full build). This module answers the
same question from stats alone, with the standard library, before any of that is imported.

``<out>/.verse-etl.stamp.json`` is written when a build has published its tables and report,
and when the full check answered "nothing changed". It holds digests of:

- the resolved build parameters (canonical JSON of every field, source roots and options
  included, and the working folder relative paths are resolved from);
- the code: every file of the project's packages (``verse_etl``, its ``schemas`` and ``flows``
  as imported here), the names (with versions) of the distributions installed in the
  environment's site-packages, and the Python version: any edit or upgrade counts;
- the stat (path, size, mtime, ctime, inode, device) of every file and folder under each
  given source root and of the MosMed identifier mapping, taken *before* the build or the
  check reads them: a file changed while they read it differs next time;
- the stat of every file and folder under the output root (but the stamp and the workspace
  lock), taken *after* everything is written: a deleted, truncated or edited output differs;

and the summary the CLI prints. :func:`check_stamp` recomputes them and compares (under the
workspace lock, ~10 ms for the 2,000 source files of the benchmark sample); only an exact
match answers "nothing changed". A missing, unreadable, foreign or different stamp answers
nothing, and the full check decides (it stays the authority): a wrong "unchanged" would hide a
change, a missing one costs the full check. The stamp is written to a temporary file, then
renamed into place, both names checked to be inside the output root and never written through
a link. A build that kept cases gone from their source (the full check would build again), a
``--rehash`` build and any URL output (``file://`` too) write none.

Racy stats (git's "racy clean" problem): a file changed twice within one timestamp tick keeps
its stat, so a stat is trusted only if the file was last changed in an earlier tick than the
moment it was taken. Source files follow the rule of the source-digest caches
(:mod:`verse_etl.cases.stat_cache`, whose entries the full check relies on): changed at least
:data:`SETTLE_NS` (whole-second file systems: :data:`SETTLE_COARSE_NS`) before the signature;
otherwise no stamp is written. Outputs are compared with the file system's own clock: the
stamp's temporary file is stamped with the current time first, and every output must be older
than it (a file on another device follows the source rule); a build's last writes being in the
same tick, the signature is taken again a few milliseconds later.

What the stat cannot see is what the source-digest caches cannot see either (a change that
keeps the ctime: writes to the raw device, a clock set back); ``--rehash`` and ``--force``
skip the stamp. Cases of a source left out of the build keep their outputs: their stats count
as outputs (a change there means "ask the full check"), their sources are not signed (the
build does not read them), as in the full check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import site
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# The settle rule's times, named here as before (the docstring and tests use them).
from verse_etl.cases.settle import SETTLE_COARSE_NS as SETTLE_COARSE_NS
from verse_etl.cases.settle import SETTLE_NS as SETTLE_NS
from verse_etl.cases.settle import settled
from verse_etl.errors import OutputPathError, VerseEtlError
from verse_etl.params import BuildParams
from verse_etl.paths import ensure_inside
from verse_etl.publish.lock import LOCK_NAME, workspace_lock
from verse_etl.tables.summary import BuildSummary

STAMP_NAME = ".verse-etl.stamp.json"
FORMAT = 1
_RETRIES_S = (0.002, 0.01, 0.05)  # waits for the clock to leave the tick of the last writes


@dataclass(frozen=True)
class CodeFiles:
    """Where the identity of the code is read: the project's package folders and the folders
    whose ``*.dist-info`` names say which distributions are installed."""

    packages: tuple[Path, ...]
    site_dirs: tuple[Path, ...]

    @classmethod
    def installed(cls) -> CodeFiles:
        """The package folders of ``verse_etl``, ``verse_etl.schemas`` and ``verse_etl.flows``
        as this interpreter imports them (the repository's ``schemas/`` and ``flows/`` in an
        editable install), and this environment's site-packages."""
        import importlib.util

        packages: list[Path] = []
        for name in ("verse_etl", "verse_etl.schemas", "verse_etl.flows"):
            spec = importlib.util.find_spec(name)
            if spec is None or not spec.submodule_search_locations:
                raise VerseEtlError(f"{name}: package not found; reinstall verse-etl")
            packages += [Path(p) for p in spec.submodule_search_locations]
        sites = site.getsitepackages()
        if site.ENABLE_USER_SITE:
            sites.append(site.getusersitepackages())
        return cls(tuple(packages), tuple(Path(p) for p in sites))


def code_identity(code: CodeFiles) -> str:
    """sha256 of every file of ``code.packages`` (bytes and relative path, ``__pycache__``
    left out), the ``*.dist-info`` / ``*.egg-info`` names in ``code.site_dirs`` (a new version
    of any dependency renames its folder) and the Python version."""
    digest = hashlib.sha256(f"{sys.version}\0{sys.platform}\n".encode())
    for index, package in enumerate(code.packages):
        for rel, path in _package_files(package):
            digest.update(f"{index}:{rel}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\n")
    for folder in code.site_dirs:
        if folder.is_dir():
            names = sorted(
                e.name for e in os.scandir(folder) if e.name.endswith((".dist-info", ".egg-info"))
            )
            digest.update(("\n".join(names) + "\n").encode())
    return digest.hexdigest()


def _package_files(package: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            yield path.relative_to(package).as_posix(), path


def _is_url(out: str) -> bool:
    # Any URL, file:// included, is left to the full check: fsspec (which tells a local one)
    # costs more to import than this whole check.
    return "://" in out


def params_digest(params: BuildParams) -> str:
    """sha256 of the canonical JSON of every build parameter, with the working folder (relative
    source and output paths are resolved from it)."""
    text = json.dumps(
        {"params": asdict(params), "cwd": os.getcwd()}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _signed_inputs(params: BuildParams) -> list[tuple[str, Path]]:
    """What a build reads, by name: each given source root, and the identifier mapping (it may
    lie outside the MosMed root)."""
    inputs = [(source, Path(root)) for source, root in asdict(params.sources).items() if root]
    if params.mosmed.id_mapping:
        inputs.append(("mosmed.id_mapping", Path(params.mosmed.id_mapping)))
    return inputs


@dataclass(frozen=True)
class StampStart:
    """What a stamp records before a build (or the full check) reads anything: the parameters,
    the code and the sources' stats; ``trusted`` is False if a source file changed too recently
    for its stat to tell a later change apart (then no stamp is written)."""

    out: Path
    params: str
    code: str
    sources: str
    trusted: bool


def start_stamp(params: BuildParams, code: CodeFiles | None = None) -> StampStart | None:
    """Remove the stamp of ``params.out`` (the build or check about to run decides anew) and
    sign what the build will read; None if no stamp applies (a URL output, ``--rehash``).
    Call it holding the workspace lock, before anything reads the sources.
    """
    if _is_url(params.out) or params.rehash:
        return None
    out = Path(params.out)
    now = time.time_ns()
    try:
        # The link itself if the name is one (never where it points).
        ensure_inside(out, out / STAMP_NAME, follow=False).unlink(missing_ok=True)
        sources, trusted = _sign_inputs(params, now)
    except (OSError, OutputPathError):
        # A source missing or unreadable (the build reports it), or a stamp that cannot be
        # removed (nor then replaced): no stamp from this run.
        sources, trusted = "", False
    return StampStart(
        out=out,
        params=params_digest(params),
        code=code_identity(code or CodeFiles.installed()),
        sources=sources,
        trusted=trusted,
    )


def _sign_inputs(params: BuildParams, now_ns: int) -> tuple[str, bool]:
    digest = hashlib.sha256()
    trusted = True
    for name, path in _signed_inputs(params):
        digest.update(f"[{name}]\n".encode())
        for line, st in _tree(path):
            digest.update(line)
            trusted = trusted and (st is None or settled(st.st_mtime_ns, st.st_ctime_ns, now_ns))
    return digest.hexdigest(), trusted


def _tree(
    top: Path, skip: Callable[[str], bool] = lambda name: False
) -> Iterator[tuple[bytes, os.stat_result | None]]:
    """One line per file and folder below ``top`` (``top`` itself if it is a file), in a fixed
    order: the path relative to ``top``, and for files (links followed, as a reader does) size,
    mtime, ctime, inode and device; folders by name only (their entries are listed). Folder
    links are followed once (a loop is not walked twice). ``skip``: which names at the top
    are left out.

    Raises
    ------
    OSError
        If ``top`` or anything below it cannot be listed or stat'ed (gone meanwhile).
    """
    st = os.stat(top)
    if not stat.S_ISDIR(st.st_mode):
        yield _line(".", st), st
        return
    seen = {(st.st_dev, st.st_ino)}
    todo = [("", str(top))]
    while todo:
        rel, folder = todo.pop()
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            if not rel and skip(entry.name):
                continue
            path = f"{rel}{entry.name}"
            est = entry.stat()
            if stat.S_ISDIR(est.st_mode):
                yield f"{path}/\n".encode(), None
                if (est.st_dev, est.st_ino) not in seen:
                    seen.add((est.st_dev, est.st_ino))
                    todo.append((f"{path}/", entry.path))
            else:
                yield _line(path, est), est


def _line(path: str, st: os.stat_result) -> bytes:
    return (
        f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}\n"
    ).encode()


def _not_output(name: str) -> bool:
    """Names at the top of the output root that are not outputs: the stamp (and its temporary
    files, ``.verse-etl.stamp.json.<pid>.tmp``) and the workspace lock, which every build and
    check rewrites."""
    return name == LOCK_NAME or name.startswith(STAMP_NAME)


def write_stamp(start: StampStart, summary: BuildSummary) -> bool:
    """Write the stamp of a build that published everything (or a check that found nothing to
    change) with ``summary`` as the no-change rerun prints it; return whether it was written.

    Call it holding the workspace lock, after the last output is written. Nothing is written if
    a source was too fresh at ``start``, if a case gone from its source was kept (the full check
    would then build) or if an output is still in the tick of its last write after the waits;
    a stamp that cannot be written only costs the full check next time (nothing raises).
    """
    if not start.trusted or summary.pruning or summary.failing:
        return False
    tmp = start.out / f"{STAMP_NAME}.{os.getpid()}.tmp"
    try:
        ensure_inside(start.out, tmp, follow=False)
        # O_NOFOLLOW: a link planted under that name is refused, not written through.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            outputs = _sign_outputs(start.out, fd)
            if outputs is None:
                return False
            record = {
                "format": FORMAT,
                "params": start.params,
                "code": start.code,
                "sources": start.sources,
                "outputs": outputs,
                "summary": asdict(summary.as_rerun()),
            }
            data = json.dumps(record, indent=1).encode() + b"\n"
            if os.write(fd, data) != len(data):
                return False  # a short write (disk full): no stamp rather than half a one
        finally:
            os.close(fd)
        # Renamed into place: a reader sees the old stamp, none, or the whole new one.
        os.replace(tmp, ensure_inside(start.out, start.out / STAMP_NAME, follow=False))
        return True
    except (OSError, OutputPathError):
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _sign_outputs(out: Path, fd: int) -> str | None:
    """The digest of the outputs' stats, each older than the file system's clock at the start
    of the signature (the time set on ``fd``); None if some stayed in that tick."""
    for wait in (0.0, *_RETRIES_S):
        time.sleep(wait)
        os.utime(fd)  # the file system's "now", in its own clock and granularity
        probe = os.fstat(fd)
        now_ns = time.time_ns()
        digest = hashlib.sha256()
        older = True  # every output older than the probe: their stats can be trusted
        for line, st in _tree(out, _not_output):
            digest.update(line)
            if st is not None and older:
                if st.st_dev == probe.st_dev:
                    older = max(st.st_mtime_ns, st.st_ctime_ns) < probe.st_mtime_ns
                else:
                    older = settled(st.st_mtime_ns, st.st_ctime_ns, now_ns)
        if older:
            return digest.hexdigest()
    return None


@dataclass(frozen=True)
class StampCheck:
    """What :func:`check_stamp` found: the summary of the last build if nothing it covers
    changed (else None), and otherwise the first part found changed (``params``, ``code``,
    ``sources``, ``outputs``), or None if there was no readable stamp to compare with."""

    summary: BuildSummary | None
    changed: str | None = None


def check_stamp(
    params: BuildParams, wait: float = 0.0, code: CodeFiles | None = None
) -> StampCheck:
    """Compare the stamp of the last build of ``params.out`` with what is on disk now (see the
    module docstring), under the workspace lock, waiting up to ``wait`` seconds for it. Never
    raises for a stamp or file it cannot read, nor for a busy workspace."""
    if _is_url(params.out) or params.rehash:
        return StampCheck(None)
    out = Path(params.out)
    try:
        if not (out / STAMP_NAME).is_file():
            return StampCheck(None)
        with workspace_lock(out, timeout=wait):
            return _compare(params, out, code)
    except (VerseEtlError, OSError, ValueError, TypeError, KeyError):
        return StampCheck(None)


def stamped_build(
    params: BuildParams, wait: float = 0.0, code: CodeFiles | None = None
) -> BuildSummary | None:
    """The summary of the last build of ``params.out`` if its stamp shows that nothing it
    covers changed since, else None (then ask the full check); see :func:`check_stamp`."""
    return check_stamp(params, wait, code).summary


def _compare(params: BuildParams, out: Path, code: CodeFiles | None) -> StampCheck:
    record = json.loads((out / STAMP_NAME).read_text(encoding="utf-8"))
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return StampCheck(None)
    if record["params"] != params_digest(params):
        return StampCheck(None, "params")
    if record["code"] != code_identity(code or CodeFiles.installed()):
        return StampCheck(None, "code")
    if record["sources"] != _sign_inputs(params, 0)[0]:
        return StampCheck(None, "sources")
    digest = hashlib.sha256()
    for line, _ in _tree(out, _not_output):
        digest.update(line)
    if record["outputs"] != digest.hexdigest():
        return StampCheck(None, "outputs")
    return StampCheck(_summary(record.get("summary")))


def _summary(data: object) -> BuildSummary | None:
    """The recorded summary, its fields and types checked; None for anything else (a foreign
    or damaged file: then the full check decides)."""
    if not isinstance(data, dict) or not set(data) <= {f.name for f in fields(BuildSummary)}:
        return None
    try:
        summary = BuildSummary(**data)
    except TypeError:  # a required field missing
        return None
    if not isinstance(summary.rows, dict) or not isinstance(summary.checks_failed, dict):
        return None
    counts: Sequence[object] = (
        summary.cases,
        summary.converted,
        summary.reused,
        summary.stores_written,
        summary.quarantined,
        summary.failing,
        *summary.rows.values(),
        *summary.checks_failed.values(),
    )
    if not all(type(n) is int for n in counts) or not all(
        isinstance(k, str) for k in (*summary.rows, *summary.checks_failed)
    ):
        return None
    return summary
