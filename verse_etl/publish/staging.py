"""Builds whose outputs go to an fsspec URL: run each case in a local work folder, then publish.

A case task on any machine fetches the case's saved result from the target (the incremental
cache), builds in its own work folder only if the sources, parameters or stores changed, uploads
what it wrote (see :mod:`verse_etl.targets` for the order that keeps readers safe) and clears its
local copy, so a worker's disk holds one case at a time. Table assembly fetches every case result
and publishes the tables, the card and the metrics.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from verse_etl.cases.outputs import remove_path, store_paths
from verse_etl.cases.records import CaseResult
from verse_etl.paths import (
    CASES_DIR,
    TABLES_DIR,
    VOLUMES_DIR,
    case_result_name,
    case_result_path,
    metrics_path,
)
from verse_etl.targets import Target, is_url

StoreExists = Callable[[Path], bool]
CaseBuild = Callable[[Path, StoreExists], CaseResult]


def local_root(out: str, work: str = "") -> Path:
    """The folder cases and tables are built in: ``out`` itself, or for a URL the work folder
    (``work``, else one per target below the system temp folder)."""
    if not is_url(out):
        return Path(out)
    if work:
        return Path(work)
    digest = hashlib.sha256(out.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "verse-etl-work" / digest


def _rel(path: Path, work: Path) -> str:
    return path.relative_to(work).as_posix()


def run_case(build: CaseBuild, out: str, work: Path, source: str, case_id: str) -> CaseResult:
    """Build one case with ``build(out_folder, store_exists)`` and publish it if ``out`` is a URL.

    For a local ``out`` this is just ``build(Path(out), Path.exists)``.
    """
    if not is_url(out):
        return build(Path(out), Path.exists)
    target = Target(out)
    cache = case_result_path(work, source, case_id)
    # The target holds the truth: a result left in the work folder by another build is not used.
    cache.unlink(missing_ok=True)
    target.fetch(_rel(cache, work), cache)
    result = build(work, lambda store: target.store_exists(_rel(store, work)))
    if result.converted:
        for store in store_paths([result]):
            # A store is named by the key of its inputs and code: one already complete at the
            # target under that name holds these bytes (and may be published): not written over.
            if not target.store_exists(store):
                target.put_store(work / store, store)
            remove_path(work / store, work)
        target.put_file(cache, _rel(cache, work))
    return result


def publish_results(out: str, work: Path, results: Sequence[CaseResult]) -> None:
    """Upload saved case results that no case task published (derived results: fracture grades,
    dropped duplicates, discovery problems)."""
    if not is_url(out):
        return
    target = Target(out)
    for result in results:
        path = case_result_path(work, result.source, result.case_id)
        target.put_file(path, _rel(path, work))


def prune_target(
    out: str, source: str, results: Sequence[CaseResult], published: Iterable[str] = ()
) -> list[str]:
    """Delete case results and stores of ``source`` on the target that ``results`` do not hold
    and the published tables (``published``) do not point at (the object-store twin of
    :func:`verse_etl.cases.outputs.prune_source`). Returns what was deleted."""
    if not is_url(out):
        return []
    target = Target(out)
    keep_cases = {case_result_name(source, r.case_id) for r in results if r.source == source}
    keep_stores = set(store_paths(results)) | set(published)
    deleted = [
        rel
        for rel in target.list(f"{CASES_DIR}/{source}")
        if rel.rsplit("/", 1)[-1] not in keep_cases
    ]
    depth = 1 if source == "verse" else 2  # volumes/verse/<id>.zarr, volumes/mosmed/<F>/<uid>.zarr
    deleted += [
        rel
        for rel in target.list(f"{VOLUMES_DIR}/{source}", depth=depth)
        if rel.endswith(".zarr") and rel not in keep_stores
    ]
    for rel in deleted:
        target.remove(rel)
    return deleted


def saved_case_names(out: str, source: str) -> list[str]:
    """Names of the case results of ``source`` saved at ``out`` (a folder or a URL)."""
    if is_url(out):
        listed = Target(out).list(f"{CASES_DIR}/{source}")
        return sorted(rel.rsplit("/", 1)[-1] for rel in listed if rel.endswith(".json"))
    folder = Path(out) / CASES_DIR / source
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []


def load_saved_results(out: str, work: Path, source: str, names: Sequence[str]) -> list[CaseResult]:
    """The saved case results ``names`` of ``source`` (fetched into ``work`` for a URL ``out``);
    one of an older format is left out (its rows are rebuilt when the case comes back)."""
    results = []
    for name in names:
        rel = f"{CASES_DIR}/{source}/{name}"
        local = work / rel if is_url(out) else Path(out) / rel
        if is_url(out) and not Target(out).fetch(rel, local):
            continue
        try:
            result = CaseResult.from_json(local.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            result = None
        if result is not None:
            results.append(result)
    return results


def fetch_case_results(out: str, work: Path) -> Path:
    """The folder to assemble tables from: ``out`` itself, or ``work`` holding a fresh copy of
    every case result on the target."""
    if not is_url(out):
        return Path(out)
    shutil.rmtree(work / CASES_DIR, ignore_errors=True)
    Target(out).fetch_tree(CASES_DIR, work / CASES_DIR)
    return work


def publish_tables(out: str, work: Path) -> None:
    """Publish the tables folder (partition files, card) of a URL build as one generation (see
    :meth:`verse_etl.targets.Target.publish_generation`), then upload the metrics."""
    if not is_url(out):
        return
    target = Target(out)
    target.publish_generation(work / TABLES_DIR)
    target.put_file(metrics_path(work), _rel(metrics_path(work), work))
