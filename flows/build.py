"""The build flow: discover sources, build every case as a task, assemble and write the tables."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from verse_etl.assemble import BuildSummary, assemble
from verse_etl.cases.mosmed import build_mosmed_study
from verse_etl.cases.verse import build_verse_scan, discovery_result, duplicate_scans_result
from verse_etl.errors import VerseEtlError
from verse_etl.fracture_grades import fracture_grades_result
from verse_etl.params import BuildParams
from verse_etl.records import CaseResult
from verse_etl.sources.mosmed import MosmedStudy, discover_mosmed
from verse_etl.sources.verse import VerseScan, VerseSources, discover_verse_sources


class BuildFailed(VerseEtlError):
    """Some records failed checks whose mode is ``raise``; everything else was written."""


def _log_case(result: CaseResult, seconds: float) -> None:
    state = "converted" if result.converted else "unchanged"
    rows = ", ".join(f"{len(v)} {k}" for k, v in sorted(result.rows.items()))
    get_run_logger().info(
        "%s %s: %s in %.1f s (%s; %d quarantined)",
        result.source,
        result.case_id,
        state,
        seconds,
        rows or "no rows",
        len(result.quarantine),
    )


# Cases are deterministic functions of their files; the library caches them by content hash, so
# Prefect's own cache is off here. Retries cover transient I/O only (bad input is quarantined by
# the library and never raises).
@task(
    name="verse-scan",
    retries=1,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
    task_run_name="verse-{scan.scan_id}",
)
def verse_scan_task(scan: VerseScan, root: Path, out: Path, params: BuildParams) -> CaseResult:
    """Build one VerSe scan."""
    start = time.perf_counter()
    result = build_verse_scan(scan, root, out, params.volumes, params.checks)
    _log_case(result, time.perf_counter() - start)
    return result


@task(
    name="mosmed-study",
    retries=1,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
    task_run_name="mosmed-{study.folder}",
)
def mosmed_study_task(study: MosmedStudy, root: Path, out: Path, params: BuildParams) -> CaseResult:
    """Build one MosMed study."""
    start = time.perf_counter()
    result = build_mosmed_study(study, root, out, params.volumes)
    _log_case(result, time.perf_counter() - start)
    return result


@flow(name="verse-etl-build", log_prints=True, validate_parameters=False)
def build_dataset(params: BuildParams) -> BuildSummary:
    """Build the dataset described by ``params`` into ``params.out``.

    Raises
    ------
    BuildFailed
        After all tables are written, if any record failed a check whose mode is ``raise``.
    """
    logger = get_run_logger()
    out = Path(params.out)
    verse_root = Path(params.sources.verse) if params.sources.verse else None
    mosmed_root = Path(params.sources.mosmed) if params.sources.mosmed else None
    verse = discover_verse_sources(verse_root) if verse_root else VerseSources((), (), (), ())
    scans = verse.scans
    studies = discover_mosmed(mosmed_root) if mosmed_root else []
    logger.info("found %d VerSe scans and %d MosMed studies", len(scans), len(studies))
    futures = [verse_scan_task.submit(scan, verse_root, out, params) for scan in scans]
    futures += [mosmed_study_task.submit(study, mosmed_root, out, params) for study in studies]
    results = [future.result() for future in futures]
    if verse.duplicates:
        results.append(duplicate_scans_result(list(verse.duplicates), verse_root))  # type: ignore[arg-type]
    if verse.problems:
        results.append(discovery_result(verse.problems, verse_root))  # type: ignore[arg-type]
    if verse.grade_tables:
        results.append(fracture_grades_result(verse.grade_tables, verse_root, results, out))  # type: ignore[arg-type]
    summary = assemble(results, out, params.checks)
    logger.info("tables: %s; quarantined %d", summary.rows, summary.quarantined)
    if summary.failing:
        raise BuildFailed(
            f"{out}: {summary.failing} quarantined record(s) failed checks set to 'raise' "
            f"({summary.checks_failed}); see {out / 'tables' / 'quarantine.parquet'}"
        )
    return summary


def run_build(params: BuildParams) -> BuildSummary:
    """Run :func:`build_dataset` with ``params.workers`` threads."""
    runner = ThreadPoolTaskRunner(max_workers=max(1, params.workers))
    return build_dataset.with_options(task_runner=runner)(params)
