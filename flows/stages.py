"""The two halves of a build as flows of their own, for ``verse-etl ingest`` and ``verse-etl tables``.

``verse-etl build`` and the DVC stage ``build`` run :func:`verse_etl.flows.build.build_dataset`,
which does both in one flow run; these are for running them apart by hand. They live apart so
that a build does not define them: each flow builds its parameter schema when it is defined
(~20 ms each here, on the build's critical path).
"""

from __future__ import annotations

import time

from prefect import flow
from verse_etl.flows import timing
from verse_etl.flows.build import (
    Ingested,
    costed,
    ingest_sources,
    run_name,
    tables_with_artifacts,
    task_runner,
    timed_flow_run,
)
from verse_etl.flows.parameters import plain_parameters
from verse_etl.flows.server import prefect_api

from verse_etl.params import BuildParams
from verse_etl.publish.lock import workspace_lock
from verse_etl.publish.staging import local_root
from verse_etl.stopping import stop_on_signals
from verse_etl.tables.summary import BuildSummary

# Prefect's part of importing this module (see flows/build.py), added to Prefect's import.
_DEFINITIONS_START = time.perf_counter()


@flow(name="verse-etl-ingest", flow_run_name=run_name("ingest"), validate_parameters=False)
def ingest(sources: tuple[str, ...], params: BuildParams) -> Ingested:
    """Convert every case of the given ``sources`` to stores and saved case results.

    A source whose folder is not given (empty ``sources.<name>``) is skipped and its outputs
    are kept as they are: leaving a source out never deletes it (:mod:`verse_etl.publish.pruning`).
    """
    with timing.COST.body("flow run"):
        return ingest_sources(sources, params)


@flow(name="verse-etl-tables", flow_run_name=run_name("tables"), validate_parameters=False)
def tables_flow(params: BuildParams) -> BuildSummary:
    """Assemble, validate and write the tables from the saved case results (the DVC stage)."""
    with timing.COST.body("flow run"), tables_with_artifacts(params) as summary:
        return summary


def run_ingest(
    sources: tuple[str, ...],
    params: BuildParams,
    runner: str = "threads",
    dask_address: str | None = None,
    wait: float = 0.0,
) -> Ingested:
    """Run :func:`ingest` on the chosen task runner, holding the workspace lock."""
    with (
        stop_on_signals(),
        workspace_lock(local_root(params.out, params.work), timeout=wait),
        costed(f"ingest {'+'.join(sources)}"),
        prefect_api(),
        timed_flow_run(),
    ):
        flow_with_runner = plain_parameters(ingest, task_runner(params, runner, dask_address))
        return flow_with_runner(sources, params)


def run_tables(params: BuildParams, wait: float = 0.0) -> BuildSummary:
    """Run :func:`tables_flow` holding the workspace lock."""
    with (
        workspace_lock(local_root(params.out, params.work), timeout=wait),
        costed("tables"),
        prefect_api(),
        timed_flow_run(),
    ):
        return plain_parameters(tables_flow)(params)


timing.COST.add("import", time.perf_counter() - _DEFINITIONS_START)
