"""The per-case outputs of ingestion on disk: saving and loading case results, pruning stale ones.

Ingestion of one source writes, per case, its volume stores and ``cases/<source>/<id>.json``;
table assembly reads those files back, so the two can also run as separate commands
(``verse-etl ingest``, ``verse-etl tables``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from verse_etl.cases.records import CaseResult, write_text_atomic
from verse_etl.errors import StaleResultError
from verse_etl.paths import (
    CASES_DIR,
    DIGESTS_DIR,
    VOLUMES_DIR,
    case_result_name,
    case_result_path,
    ensure_inside,
)

SOURCES: tuple[str, ...] = ("verse", "mosmed")


def save_case_result(out: Path, result: CaseResult) -> None:
    """Write one case result where :func:`load_case_results` finds it."""
    write_text_atomic(case_result_path(out, result.source, result.case_id), result.to_json())


def load_case_results(out: Path, sources: Sequence[str] = SOURCES) -> list[CaseResult]:
    """Every saved case result of ``sources``, in a stable order.

    Raises
    ------
    StaleResultError
        If a file is not a case result of the current format (rerun ingestion).
    """
    results: list[CaseResult] = []
    for source in sources:
        folder = out / CASES_DIR / source
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            result = CaseResult.from_json(path.read_text(encoding="utf-8"))
            if result is None:
                raise StaleResultError(
                    f"{path}: case result of an older format (expected the current one); "
                    "rerun `verse-etl ingest`"
                )
            results.append(result)
    return results


def remove_path(path: Path, root: Path) -> None:
    """Delete a store folder or a file below the build root ``root`` (missing is fine).

    Raises
    ------
    OutputPathError
        If ``path`` is not inside ``root`` (symbolic links followed): nothing is deleted.
    """
    if path.is_symlink():
        ensure_inside(root, path, follow=False)
        path.unlink()  # the link itself, never what it points at
        return
    ensure_inside(root, path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def store_paths(results: Sequence[CaseResult]) -> list[str]:
    """Stores (paths relative to the build root) that the rows of ``results`` point at, and
    those the results keep to reuse (``CaseResult.stores``: held, so never garbage), once each."""
    paths = [
        row["store_path"]
        for r in results
        for table in ("scans", "series")
        for row in r.rows.get(table, [])
        if row.get("store_path")
    ]
    return list(dict.fromkeys([*paths, *(p for r in results for p in r.stores)]))


def prune_source(
    out: Path, source: str, results: Sequence[CaseResult], published: Iterable[str] = ()
) -> list[Path]:
    """Delete stores and case results of ``source`` that ``results`` (what to keep) do not hold.

    Stores in ``published`` (those the published tables point at) stay until new tables
    replace them (:mod:`verse_etl.tables.generations`). Leftovers of an interrupted write
    (``*.tmp-*``, ``*.old-*``) are cleared. Returns what was deleted.
    """
    keep_cases = {case_result_name(source, r.case_id) for r in results if r.source == source}
    keep_stores = set(store_paths(results)) | set(published)
    deleted: list[Path] = []
    cases = out / CASES_DIR / source
    for path in sorted(cases.glob("*")) if cases.is_dir() else []:
        if path.name not in keep_cases:
            deleted.append(path)
    volumes = out / VOLUMES_DIR / source
    # Stores sit at volumes/verse/<id>.zarr and volumes/mosmed/<Folder>/<uid>.zarr: look only
    # that deep, never inside a store.
    candidates = (
        [p for pattern in ("*", "*/*") for p in volumes.glob(pattern)] if volumes.is_dir() else []
    )
    for path in sorted(candidates):
        rel = path.relative_to(out).as_posix()
        is_store = (
            path.name.endswith(".zarr") or ".zarr.tmp-" in path.name or ".zarr.old-" in path.name
        )
        if is_store and rel not in keep_stores and not any(p in deleted for p in path.parents):
            deleted.append(path)
    for path in deleted:
        remove_path(path, out)
    # The stat caches of source files (verse_etl.cases.stat_cache) are not outputs: those of
    # cases gone, and half-written ones of a killed build, go without being listed.
    digests = out / DIGESTS_DIR / source
    for path in sorted(digests.glob("*")) if digests.is_dir() else []:
        if path.name not in keep_cases:
            remove_path(path, out)
    # Study folders of MosMed left empty by the pruning go too.
    for folder in sorted(volumes.glob("*"), reverse=True) if volumes.is_dir() else []:
        if folder.is_dir() and not folder.name.endswith(".zarr") and not any(folder.iterdir()):
            folder.rmdir()
    return deleted
