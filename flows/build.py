"""The build flow: the cases of every source (a task each that needs building), then the tables
and the report.

``build_dataset`` runs everything in one flow run: ``verse-etl build`` and the DVC stage
``build`` run it, so one Prefect import and flow-run engine per build. Its two halves, for
``verse-etl ingest`` and ``verse-etl tables`` by hand, are flows of :mod:`verse_etl.flows.stages`
composed of the same parts (:func:`ingest_sources`, :func:`tables_with_artifacts`).

Every entry point runs on one Prefect API (:func:`verse_etl.flows.server.prefect_api`); a build
leaves artifacts in Prefect: ingest progress, the build summary, the quarantine per check.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_engine import TaskRunTimeoutError
from prefect.task_runners import ThreadPoolTaskRunner
from verse_etl.flows import timing
from verse_etl.flows.parameters import plain_parameters
from verse_etl.flows.progress import IngestProgress, heartbeat, source_bytes
from verse_etl.flows.progress_artifact import ProgressArtifact
from verse_etl.flows.server import prefect_api

from verse_etl.cases.outputs import SOURCES, load_case_results, save_case_result
from verse_etl.cases.records import CaseResult
from verse_etl.cases.seal import rejected_case
from verse_etl.errors import BuildFailed, InputError, VerseEtlError, is_transient, one_line
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.mosmed.case import source_results as mosmed_source_results
from verse_etl.params import BuildParams
from verse_etl.paths import table_dir
from verse_etl.publish.card import card_inputs, write_card
from verse_etl.publish.current import saved_case_result
from verse_etl.publish.lock import workspace_lock
from verse_etl.publish.pruning import PruneDecision, collect_garbage_after_switch, settle_source
from verse_etl.publish.staging import (
    fetch_case_results,
    local_root,
    publish_results,
    publish_tables,
    run_case,
)
from verse_etl.publish.stamp import start_stamp, write_stamp
from verse_etl.report.page import write_report
from verse_etl.sources.mosmed import MosmedStudy, discover_mosmed, read_id_mapping
from verse_etl.sources.verse import VerseScan, discover_verse_sources
from verse_etl.stopping import stop_on_signals
from verse_etl.tables.assemble import BuildSummary, assemble
from verse_etl.targets import is_url
from verse_etl.verse.case import build_verse_scan, source_results

# Prefect's part of importing this module: the decorators below build each flow's parameter
# schema (~20 ms a flow). Timed from here to the module's end, and added to Prefect's import.
_DEFINITIONS_START = time.perf_counter()


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what may pass next time: network-filesystem or object-store I/O
    (:func:`verse_etl.errors.is_transient`), never a parse or decode error, nor a case that
    ran out of its time limit."""
    try:
        state.result()
    except TaskRunTimeoutError:
        return False
    except Exception as e:
        return is_transient(e)
    return False


# The library caches each case by the content hash of its files and the volume parameters
# (cases/<source>/<id>.json), and the hash of each file by its stat (digests/<source>/<id>.json),
# so an unchanged case reads no source file; Prefect's own cache is
# off to keep a single source of truth. Retries cover transient I/O only.
_CASE_TASK: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [2, 10],
    "retry_condition_fn": _transient,
    "cache_policy": NO_CACHE,
}


@task(name="verse-scan", task_run_name="verse-{scan.scan_id}", **_CASE_TASK)
def verse_scan_task(scan: VerseScan, root: Path, work: Path, params: BuildParams) -> CaseResult:
    """Build one VerSe scan (and publish it when the build goes to a URL)."""
    with heartbeat(get_run_logger().info, f"verse {scan.scan_id}"), timing.COST.case_body():
        return run_case(
            lambda out, exists: build_verse_scan(
                scan, root, out, params.volumes, params.checks, exists, params.rehash
            ),
            params.out,
            work,
            "verse",
            scan.scan_id,
        )


@task(name="mosmed-study", task_run_name="mosmed-{study.folder}", **_CASE_TASK)
def mosmed_study_task(
    study: MosmedStudy, root: Path, work: Path, params: BuildParams
) -> CaseResult:
    """Build one MosMed study (and publish it when the build goes to a URL)."""
    with heartbeat(get_run_logger().info, f"mosmed {study.folder}"), timing.COST.case_body():
        return run_case(
            lambda out, exists: build_mosmed_study(
                study,
                root,
                out,
                params.volumes,
                params.mosmed,
                exists,
                params.checks.limits,
                params.rehash,
            ),
            params.out,
            work,
            "mosmed",
            study.folder,
        )


Finish = Callable[[list[CaseResult]], list[CaseResult]]


@dataclass(frozen=True)
class _Submitted:
    """One source's submitted cases, what to compute once they are done, and its folder."""

    cases: list[_Case]
    finish: Finish
    root: str
    found: bool  # the folder exists (else nothing was discovered, and nothing may be pruned)


def _submit_source(source: str, params: BuildParams) -> _Submitted:
    """Discover one source and submit a task per case that needs one (:func:`_saved`).

    Returns the cases and what to compute once they are done: for VerSe the dropped
    duplicates, the files that cannot be placed and the VerSe'19 fracture grades, which are
    joined to the scans' vertebrae (:func:`verse_etl.verse.case.source_results`).
    """
    out = local_root(params.out, params.work)
    root_text = getattr(params.sources, source)
    root = Path(root_text)
    if not root.is_dir():
        return _Submitted([], lambda _: [], root_text, False)
    if source == "verse":
        found = discover_verse_sources(root)
        return _submit(
            source,
            verse_scan_task,
            [(scan, scan.scan_id, scan.ct) for scan in found.scans],
            lambda scans: source_results(found, root, scans, out),
            root_text,
            params,
        )
    mapping = read_id_mapping(Path(params.mosmed.id_mapping)) if params.mosmed.id_mapping else ()
    studies = discover_mosmed(root, params.mosmed.annotation_dirs, mapping)
    return _submit(
        source,
        mosmed_study_task,
        [(s, s.folder, s.dicom_dir or s.archive or (s.annotations or (root,))[0]) for s in studies],
        lambda _: mosmed_source_results(root, params.mosmed.annotation_dirs),
        root_text,
        params,
    )


def _submit(
    source: str,
    task: Any,
    cases: list[tuple[Any, str, Any]],
    finish: Finish,
    root_text: str,
    params: BuildParams,
) -> _Submitted:
    """Submit ``task`` for each of ``cases`` (case, its id, the file a record names) that needs
    it (:func:`_saved`); the others keep their saved results."""
    out = local_root(params.out, params.work)
    root = Path(root_text)
    run = task.with_options(timeout_seconds=params.case_timeout_s or None)
    submitted = []
    for case, case_id, file in cases:
        saved = _saved(source, case, root, out, params)
        future = None
        if saved is None:
            timing.COST.submitted = timing.COST.submitted or time.perf_counter()
            future = run.submit(case, root, out, params)
        submitted.append(_Case(future, source, case_id, file, root, source_bytes(case), saved))
    return _Submitted(submitted, finish, root_text, True)


def _saved(source: str, case: Any, root: Path, out: Path, params: BuildParams) -> CaseResult | None:
    """The saved result the case's task would only load again, found without reading a source
    file (its files' stats as cached, its key, its stores complete); None when the case needs
    its task, and always for a build to a URL or with --rehash.

    An unchanged case then costs no task run: Prefect's engine took 15-20 ms a case here (a
    one-case rebuild of the full release submitted hundreds of tasks to reuse them). What
    this check cannot read is left to the case's task, which quarantines it as it would."""
    if params.rehash or is_url(params.out):
        return None
    try:
        return saved_case_result(source, case, root, out, params)
    except Exception:  # the task meets it again, and keeps it in that case
        logging.getLogger(__name__).debug("%s: reuse not checked", case, exc_info=True)
        return None


@dataclass(frozen=True)
class _Case:
    """A submitted case: its future and what names it if the task itself fails."""

    future: Any  # None for a case whose saved result is reused without a task
    source: str
    case_id: str
    file: Any  # the file a record names when the error names none
    root: Path
    size: int = 0  # bytes of input, for the MB/s of the progress display
    saved: CaseResult | None = None

    def result(self, out: Path, case_timeout_s: int) -> CaseResult:
        """The case's result; a task that failed after its retries (transient I/O that did not
        pass, the time limit) quarantines this case only. Errors about the build itself
        (:class:`~verse_etl.errors.VerseEtlError` other than input, e.g. a full disk) stop it."""
        if self.future is None and self.saved is not None:
            return self.saved
        try:
            return self.future.result()
        except Exception as e:
            if isinstance(e, VerseEtlError) and not isinstance(e, InputError):
                raise
            error = e if isinstance(e, InputError) else _task_error(self.file, e, case_timeout_s)
        table = "scans" if self.source == "verse" else "series"
        result = rejected_case(self.source, self.case_id, error, self.root, table)
        save_case_result(out, result)
        return result


def _task_error(file: Any, error: BaseException, case_timeout_s: int) -> InputError:
    if isinstance(error, TaskRunTimeoutError):
        return InputError(
            file,
            f"the case did not finish within build.case_timeout_s ({case_timeout_s} s)",
            "check the file (a slow or hanging mount?) or raise the limit",
            check="case_timeout",
        )
    return InputError(
        file,
        f"I/O kept failing after the task's retries ({type(error).__name__}: "
        f"{one_line(str(error), 200)})",
        "check the storage (network filesystem, object store) and build again",
        check="io_retries_exhausted",
    )


@dataclass(frozen=True)
class Ingested:
    """What ingestion did: the results of this build's cases (and derived results), and per
    source what became of the cases an earlier build had and this one did not."""

    results: list[CaseResult]
    pruning: list[PruneDecision]
    # the source-level results computed after the cases (VerSe fracture grades, ...)
    derived: list[CaseResult] = field(default_factory=list)

    @property
    def cases(self) -> list[CaseResult]:
        """The results of the case tasks (what was submitted and counted as cases)."""
        derived = {id(r) for r in self.derived}
        return [r for r in self.results if id(r) not in derived]


def _collect(source_futures: dict[str, _Submitted], params: BuildParams) -> Ingested:
    """Wait for every case, log progress as cases finish, save and prune per source (only as
    :func:`verse_etl.publish.pruning.decide_pruning` allows)."""
    logger = get_run_logger()
    out = local_root(params.out, params.work)
    cases = [c for s in source_futures.values() for c in s.cases]
    running = {c.future: c for c in cases if c.future is not None}
    total = len(cases)
    with (
        ProgressArtifact(
            "ingest-progress", f"Cases of {', '.join(source_futures)} built into {params.out}"
        ) as artifact,
        IngestProgress(total, sum(c.size for c in cases), logger.info, artifact.update) as progress,
    ):
        done = [c for c in cases if c.future is None]  # reused: done already
        for case in itertools.chain(done, (running[f] for f in as_completed(list(running)))):
            result: CaseResult = case.result(out, params.case_timeout_s)
            figures = progress.case_done(case.size, kept=case.future is None)
            logger.info(
                "[%d/%d] %s %s: %s, %d quarantined (%s)",
                progress.done,
                total,
                result.source,
                result.case_id,
                "built" if result.converted else "unchanged",
                len(result.quarantine),
                figures,
            )
    timing.COST.collected = time.perf_counter()
    results: list[CaseResult] = []
    decisions: list[PruneDecision] = []
    derived_all: list[CaseResult] = []
    for source, submitted in source_futures.items():
        built = [c.result(out, params.case_timeout_s) for c in submitted.cases]
        derived = submitted.finish(built)
        mine = built + derived
        for result in derived:
            save_case_result(out, result)
        publish_results(params.out, out, derived)
        decision, removed = settle_source(
            params.out,
            out,
            source,
            submitted.root,
            submitted.found,
            mine,
            params.prune,
            params.prune_max_loss,
        )
        decisions.append(decision)
        if decision.noteworthy:
            (logger.info if decision.prune else logger.warning)("%s", decision.reason)
        for path in removed:
            logger.info("%s: removed (%s)", path, "pruned" if decision.prune else "leftover")
        results += mine
        derived_all += derived
    return Ingested(results, decisions, derived_all)


def run_name(kind: str) -> Callable[[], str]:
    """A flow run name saying what the run builds, e.g. ``ingest verse -> data/build``."""

    def name() -> str:
        parameters = flow_run.get_parameters()
        params = parameters.get("params")
        out = getattr(params, "out", "?")
        sources = parameters.get("sources")
        what = f"{kind} {'+'.join(sources)}" if sources else kind
        return f"{what} -> {out}"

    return name


def ingest_sources(sources: tuple[str, ...], params: BuildParams) -> Ingested:
    """Convert every case of the given ``sources`` (a task each; an unchanged case keeps its
    saved result without one) and save and settle them (inside a flow run)."""
    logger = get_run_logger()
    given = tuple(s for s in sources if getattr(params.sources, s))
    for source in sorted(set(sources) - set(given)):
        logger.info("%s: no source folder given; its outputs are kept as they are", source)
    submitted = {source: _submit_source(source, params) for source in given}
    for source, sub in submitted.items():
        tasks = sum(c.future is not None for c in sub.cases)
        logger.info(
            "%s: %d cases: %d submitted, %d unchanged (their saved results reused)",
            source,
            len(sub.cases),
            tasks,
            len(sub.cases) - tasks,
        )
    ingested = _collect(submitted, params)
    built = sum(r.converted for r in ingested.cases)
    logger.info(
        "ingested %d cases: %d built, %d unchanged; %d source-level result(s)%s",
        len(ingested.cases),
        built,
        len(ingested.cases) - built,
        len(ingested.derived),
        f" ({', '.join(r.case_id for r in ingested.derived)})" if ingested.derived else "",
    )
    return ingested


def tables(params: BuildParams) -> BuildSummary:
    """Assemble, validate and write every table from the saved case results.

    Raises
    ------
    BuildFailed
        After all tables are written, if any record failed a check whose mode is ``raise``.
    """
    out = fetch_case_results(params.out, local_root(params.out, params.work))
    summary = assemble(
        load_case_results(out),
        out,
        params.checks,
        before_switch=lambda generation: write_card(generation, params),
        # Unchanged tables and card are left as they are (local builds: a URL build publishes
        # from its work folder every time).
        inputs=None if is_url(params.out) else card_inputs(params),
    )
    publish_tables(params.out, out)
    if summary.failing:
        # Name the checks that fail the build, not every check that recorded something.
        raising = {
            c: n for c, n in summary.checks_failed.items() if params.checks.mode(c) == "raise"
        }
        raise BuildFailed(
            f"{out}: {summary.failing} quarantined record(s) failed checks set to 'raise' "
            f"({raising}); see {table_dir(out, 'quarantine')}"
        )
    return summary


def _quarantine_by_check(out: Path) -> dict[str, int]:
    files = sorted(table_dir(out, "quarantine").glob("source=*/release=*/*.parquet"))
    checks = Counter(
        check
        for f in files
        for check in pq.ParquetFile(f).read(columns=["check_name"]).column(0).to_pylist()
    )
    return dict(sorted(checks.items()))


def _table_artifacts(params: BuildParams, summary: BuildSummary | None) -> None:
    """The build summary and the quarantine per check, as table artifacts of the run."""
    out = local_root(params.out, params.work)
    if summary is not None:
        create_table_artifact(
            [{"table": name, "rows": n} for name, n in summary.rows.items()],
            key="build-summary",
            description=(
                f"Tables of {params.out}: {summary.cases} ingested cases, "
                f"{summary.quarantined} quarantined records"
            ),
        )
    by_check = _quarantine_by_check(out)
    modes = params.checks
    create_table_artifact(
        [{"check": check, "records": n, "mode": modes.mode(check)} for check, n in by_check.items()]
        or [{"check": "(none)", "records": 0, "mode": ""}],
        key="quarantine-by-check",
        description=f"Quarantined records of {params.out} per check",
    )


@task(name="tables", cache_policy=NO_CACHE)
def tables_task(params: BuildParams) -> BuildSummary:
    """Write the tables (see :func:`tables`)."""
    with timing.COST.body("task runs"):
        return tables(params)


@contextlib.contextmanager
def tables_with_artifacts(params: BuildParams) -> Iterator[BuildSummary]:
    """Run :func:`tables_task`, and leave the summary and the quarantine per check as artifacts
    of the flow run: sent from a thread of their own while the block runs (the report is drawn
    meanwhile), waited for at its end. When records failed a ``raise`` check (the tables are
    written then too), the quarantine is left before the build stops."""
    try:
        summary = call_task(tables_task, params)
    except BuildFailed:
        with timing.COST.part("artifacts"):
            _table_artifacts(params, None)
        raise
    context = contextvars.copy_context()  # the flow run's: the artifacts belong to it
    sender = threading.Thread(
        target=context.run, args=(_sent_table_artifacts, params, summary), name="table-artifacts"
    )
    sender.start()
    try:
        yield summary
    finally:
        with timing.COST.part("artifacts"):
            sender.join()


def _sent_table_artifacts(params: BuildParams, summary: BuildSummary) -> None:
    try:
        _table_artifacts(params, summary)
    except Exception as e:  # views of the build: never fail it
        logging.getLogger(__name__).warning("table artifacts of %s not sent (%s)", params.out, e)


@task(name="report", cache_policy=NO_CACHE)
def report_task(out: Path) -> Path:
    """Draw the QC pictures and write the HTML build report."""
    with timing.COST.body("task runs"):
        return write_report(out)


def call_task(task: Any, *args: Any) -> Any:
    """Call a task in the flow's thread, its time around its body counted as Prefect's."""
    with timing.COST.part("task runs"):
        return task(*args)


@flow(name="verse-etl-build", flow_run_name=run_name("build"), validate_parameters=False)
def build_dataset(params: BuildParams) -> BuildSummary:
    """Ingest every source, then write the tables and the report (``verse-etl build``)."""
    with timing.COST.body("flow run"):
        return _build_dataset(params)


def _build_dataset(params: BuildParams) -> BuildSummary:
    ingested = ingest_sources(SOURCES, params)
    with tables_with_artifacts(params) as summary:
        # The new tables are published: stores only the old ones pointed at can go now.
        logger = get_run_logger()
        for path in collect_garbage_after_switch(params):
            logger.info("%s: removed (no longer published)", path)
        if not is_url(params.out):  # the report reads the local build; a URL build has none
            call_task(report_task, Path(params.out))
    # Counted as the ingest counted them: cases (a task each); the source-level results computed
    # after them (fracture grades, ...) are logged apart, so the counts agree from start to end.
    cases = ingested.cases
    built = sum(r.converted for r in cases)
    return BuildSummary(
        **{
            **summary.__dict__,
            "cases": len(cases),
            "converted": built,
            "reused": len(cases) - built,
            "stores_written": sum(r.stores_written for r in ingested.results),
            "pruning": {d.source: d.reason for d in ingested.pruning if d.noteworthy},
        }
    )


def task_runner(
    params: BuildParams, runner: str = "threads", dask_address: str | None = None
) -> Any:
    """The task runner for ``runner``: threads (default) or dask (local cluster or an address)."""
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=max(1, params.workers))
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if os.environ.get("DASK_LOGGING__DISTRIBUTED") == "warning":
            # The default of verse_etl.flows, also when Dask was imported before it was set.
            logging.getLogger("distributed").setLevel(logging.WARNING)

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": max(1, params.workers),
                "threads_per_worker": 1,
                "processes": True,
            }
        )
    raise VerseEtlError(f"unknown task runner {runner!r} (expected threads or dask)")


@contextlib.contextmanager
def costed(command: str) -> Iterator[None]:
    """Around all of a command's use of Prefect (the API, the flow run, the flush): Prefect's
    cost line is logged when it is over, also when the flow failed."""
    timing.COST.new_run()
    try:
        yield
    finally:
        print(timing.COST.line(command, timing.process_seconds()), file=sys.stderr, flush=True)


@contextlib.contextmanager
def timed_flow_run() -> Iterator[None]:
    """Around a flow's call on the API: Prefect's log and event workers started, timed as the
    flow run, then Prefect's queued logs and events sent (timed, instead of at exit).

    Each worker starts on the first record it is given (an API client and a connection each,
    in Prefect's loop thread): the flow's first log line waited for one, and the first task run
    of every thread for the other (30-100 ms each on this machine). Started from a thread of
    their own as the flow run begins, they are up by then, while the flow waits on the API."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    context = contextvars.copy_context()  # the API's settings (prefect_api)
    threading.Thread(
        target=context.run,
        args=(_start_workers, (EventsWorker, APILogWorker)),
        name="prefect-workers",
        daemon=True,
    ).start()
    patience = 5.0  # stopped (Ctrl-C) or failed: do not keep the user waiting on the API
    try:
        with timing.COST.part("flow run"):
            yield
        patience = 30.0
    finally:
        with timing.COST.part("flush"):
            APILogWorker.drain_all(timeout=patience, at_exit=False)
            EventsWorker.drain_all(timeout=patience, at_exit=False)


def _start_workers(workers: tuple[Any, ...]) -> None:
    for worker in workers:
        try:
            worker.instance()
        except Exception as e:  # started again by the first record it is given
            logging.getLogger(__name__).debug("%s not started early (%s)", worker.__name__, e)


def run_build(
    params: BuildParams, runner: str = "threads", dask_address: str | None = None, wait: float = 0.0
) -> BuildSummary:
    """Run :func:`build_dataset` on the chosen task runner, holding the workspace lock."""
    with (
        stop_on_signals(),
        workspace_lock(local_root(params.out, params.work), timeout=wait),
    ):
        stamp = start_stamp(params)  # before the flow reads a source (verse_etl.publish.stamp)
        with costed("build"), prefect_api(), timed_flow_run():
            summary = plain_parameters(build_dataset, task_runner(params, runner, dask_address))(
                params
            )
        if stamp is not None:
            write_stamp(stamp, summary)  # after the tables and the report are published
        return summary


timing.COST.add("import", time.perf_counter() - _DEFINITIONS_START)
