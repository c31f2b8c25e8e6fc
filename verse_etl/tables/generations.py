"""A build becomes visible as a whole: tables, card and the stores they point at move together.

Readers open ``<out>/tables/<table>/...`` and ``<out>/tables/DATASET_CARD.md`` and follow each
row's ``store_path``. A build therefore:

1. writes every store at a path named after its case key (``<id>.<key>.zarr``, see
   :mod:`verse_etl.paths`): a rebuilt case gets a new store *beside* the one the published
   tables point at, never over it; an unchanged case keeps its store;
2. deletes no store the published tables still point at while ingesting (pruning, see
   :mod:`verse_etl.publish.pruning`, spares them);
3. writes all tables and the card into a new generation folder ``<out>/.generation-<pid>/tables``
   and exchanges it with ``<out>/tables`` in one atomic ``renameat2(RENAME_EXCHANGE)`` (Linux
   >= 3.15; elsewhere, or on a filesystem without it, two renames: for an instant there is no
   ``tables`` folder, never a mix); the old generation, now in the generation folder, is deleted;
4. writes ``metrics.json`` (for ``dvc metrics``; not read by dataset readers);
5. only then (the build flow: ``verse-etl build``, the DVC stage ``build``) deletes stores that
   neither the published tables nor a saved case result point at (:func:`collect_garbage`).

A SIGKILL at any moment leaves readers the whole old dataset or the whole new one; a rerun
finishes the job (leftover generation folders of dead processes are removed first).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable
from pathlib import Path

from verse_etl.cases.outputs import remove_path, store_paths
from verse_etl.cases.records import CaseResult
from verse_etl.paths import TABLES_DIR, VOLUMES_DIR, ensure_inside

GENERATION_PREFIX = ".generation-"
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def generation_dir(out: Path) -> Path:
    """The folder this process writes the next generation into (``tables`` below it)."""
    return ensure_inside(out, out / f"{GENERATION_PREFIX}{os.getpid()}")


def remove_stale_generations(out: Path) -> list[Path]:
    """Delete generation folders left by killed builds (and by this process); return them.

    The workspace lock (:mod:`verse_etl.publish.lock`) keeps a second build out, so any generation
    folder is a leftover.
    """
    found = sorted(out.glob(f"{GENERATION_PREFIX}*")) if out.is_dir() else []
    for path in found:
        remove_path(path, out)
    return found


def _libc_exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 not available")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; return False if the system cannot (the caller then
    falls back to renames)."""
    try:
        _libc_exchange(a, b)
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):
            return False
        raise
    return True


def switch_tables(out: Path, generation: Path) -> None:
    """Make ``generation/tables`` the published ``out/tables`` in one step, then delete the old.

    Raises
    ------
    OutputPathError
        If either folder is outside ``out``.
    """
    new = ensure_inside(out, generation / TABLES_DIR)
    final = ensure_inside(out, out / TABLES_DIR)
    if not final.exists():
        os.rename(new, final)
    elif not exchange(new, final):
        aside = generation / f"{TABLES_DIR}.old"
        os.rename(final, aside)
        os.rename(new, final)
    _fsync_dir(out)
    remove_path(generation, out)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def published_store_paths(out: Path | str, filesystem: object | None = None) -> set[str]:
    """Stores (relative to the build root) the published tables of the build at ``out`` point
    at; empty if there are no tables yet. ``filesystem`` reads a build on an object store."""
    from verse_etl.tables.parquet import read_table

    paths: set[str] = set()
    for name in ("scans", "series"):
        try:
            table = read_table(out, name, columns=["store_path"], filesystem=filesystem)
        except (OSError, ValueError, KeyError):
            # No published table yet (a first build; an object store without that prefix).
            continue
        paths.update(p for p in table.column("store_path").to_pylist() if p)
    return paths


def collect_garbage(out: Path, sources: Iterable[str], results: Iterable[CaseResult]) -> list[Path]:
    """Delete stores of ``sources`` that neither the published tables nor ``results`` (the saved
    case results) point at. Run after :func:`switch_tables`. Returns what was deleted."""
    keep = published_store_paths(out) | set(store_paths(list(results)))
    deleted = []
    for source in sources:
        volumes = out / VOLUMES_DIR / source
        pattern = ("*.zarr",) if source == "verse" else ("*/*.zarr",)
        for path in sorted(p for g in pattern for p in volumes.glob(g)) if volumes.is_dir() else []:
            if path.relative_to(out).as_posix() not in keep:
                remove_path(path, out)
                deleted.append(path)
        for folder in sorted(volumes.glob("*"), reverse=True) if volumes.is_dir() else []:
            if folder.is_dir() and not folder.name.endswith(".zarr") and not any(folder.iterdir()):
                folder.rmdir()
    return deleted
