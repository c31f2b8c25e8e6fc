"""Case results -> validated tables, Parquet files and build metrics."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any, get_args

import pandas as pd

from verse_etl.cases.records import (
    CaseResult,
    QuarantineRecord,
    quarantine_record,
    write_text_atomic,
)
from verse_etl.mosmed.case import drop_duplicate_series
from verse_etl.params import CheckParams
from verse_etl.paths import metrics_path, table_dir
from verse_etl.schemas import CONTRACTS, QUARANTINE, SCANS, SERIES, Table
from verse_etl.schemas.table import Step
from verse_etl.sources.verse import release_split
from verse_etl.tables.freshness import (
    forget_tables,
    record_tables,
    results_key,
    unchanged_tables,
)
from verse_etl.tables.generations import generation_dir, remove_stale_generations, switch_tables
from verse_etl.tables.parquet import collect_rows, frame, quarantine_frame, write_table
from verse_etl.tables.summary import BuildSummary
from verse_etl.tables.validation import validate_table


def _function(name: str) -> Callable[..., Any]:
    """The function a contract names as ``"module:function"`` (contracts do not import the
    library, so they name what computes their rows instead)."""
    module, _, function = name.partition(":")
    return getattr(import_module(module), function)


def _release(row: dict[str, Any] | pd.Series, scan_release: dict[str, str]) -> str:
    """Release of the case a quarantine record belongs to, as far as the record tells."""
    if row["source"] == "verse":
        if row["case_id"] in scan_release:
            return scan_release[str(row["case_id"])]
        for part in str(row["file"]).split("/"):
            found = release_split(part.removesuffix(".zip"))
            if found:
                return found[0]
        return "unknown"
    try:
        record = json.loads(str(row["record"])) if row["record"] else {}
    except json.JSONDecodeError:
        record = {}
    release = record.get("release") if isinstance(record, dict) else None
    return release if release in ("v1", "v2") else SERIES.release or ""


def _with_partitions(
    df: pd.DataFrame, table: Table, parents: dict[str, dict[Any, dict[str, Any]]]
) -> pd.DataFrame:
    """Fill the partition keys (source, release) of the rows of ``table``."""
    df = df.copy()
    df["source"] = table.source
    if table.release is not None:
        df["release"] = table.release
    elif table.release_from_parent and table.parent is not None:
        key, parent = table.parent
        df["release"] = [parents[parent].get(v, {}).get("release", "unknown") for v in df[key]]
    return df


def _validate(
    df: pd.DataFrame,
    table: Table,
    parents: dict[str, dict[Any, dict[str, Any]]],
    checks: CheckParams,
) -> tuple[pd.DataFrame, list[QuarantineRecord]]:
    """Validate ``df`` against ``table``'s contract; its rejected rows as quarantine records
    naming case and file as the contract says."""
    if table.file_of is not None:
        file_of = _function(table.file_of)
        key, parent = table.parent or ("", "")
        of_parent = parents.get(parent, {})

        def file_of_row(row: pd.Series, check: str) -> str:
            return str(file_of(row, check, of_parent.get(row[key], {})))

    else:

        def file_of_row(row: pd.Series, check: str) -> str:
            return row[table.file_column]

    return validate_table(
        df,
        table.model,
        table=table.name,
        source_of=lambda _row: table.source,
        case_of=lambda row: row[table.case_column],
        file_of=file_of_row,
        checks=checks,
    )


def _drop_orphans(
    child: pd.DataFrame, parent: pd.DataFrame, table: Table
) -> tuple[pd.DataFrame, list[QuarantineRecord]]:
    """Rows whose parent row was rejected are rejected too: no vertebra without its scan."""
    assert table.parent is not None
    key, _ = table.parent
    file_col = table.file_column or table.case_column
    orphan = ~child[key].isin(set(parent[key]))
    records = [
        quarantine_record(
            table.source,
            str(row[table.case_column]),
            str(row[file_col]),
            "parent_rejected",
            f"{table.name} row left out because its {key} {row[key]!r} was rejected",
            table=table.name,
            record=json.dumps(row.to_dict(), default=str, sort_keys=True),
        )
        for _, row in child[orphan].iterrows()
    ]
    return child[~orphan].reset_index(drop=True), records


def assemble(
    results: Sequence[CaseResult],
    out: Path,
    checks: CheckParams,
    before_switch: Callable[[Path], object] | None = None,
    inputs: Any = None,
) -> BuildSummary:
    """Validate every table, publish the Parquet files as one generation, write the metrics.

    Nothing is written if the published tables were made from the same inputs (the results,
    ``checks``, the contracts' and this step's code, and ``inputs``: what ``before_switch``
    writes depends on; see :mod:`verse_etl.tables.freshness`). With a ``before_switch`` and no
    ``inputs`` its output's inputs are unknown, and the tables are always written.

    Every table is written into a new generation folder; ``before_switch(generation)`` adds
    what must become visible with them (the dataset card, written below
    ``generation/tables``); then :func:`verse_etl.tables.generations.switch_tables` replaces the
    published tables in one step. Tables are written even when some rows fail a ``raise``
    check: the caller decides to fail the build after everything good is on disk. Leftovers of
    a killed earlier run are removed first.
    """
    remove_stale_generations(out)
    for leftover in [*out.glob("tables/.*.tmp-*"), *out.glob("tables/.*.old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in out.glob("*.tmp-*"):
        leftover.unlink(missing_ok=True)
    key = (
        results_key(results, checks, inputs)
        if before_switch is None or inputs is not None
        else None
    )
    if key is not None and (kept := unchanged_tables(out, key)) is not None:
        return _summary(results, kept)
    forget_tables(out)
    generation = generation_dir(out)
    # A MosMed series found in two study folders is kept once (as VerSe scans are).
    results, duplicates = drop_duplicate_series(results)
    quarantine: list[QuarantineRecord] = [q for r in results for q in r.quarantine] + duplicates
    # The case rows of every table a contract names as a parent, by key (as built, before
    # validation): the files a child's quarantine record names, the release it inherits.
    parents = {
        parent: {row[key]: row for row in collect_rows(results, parent)}
        for key, parent in {t.parent for t in CONTRACTS.values() if t.parent}
    }
    scan_release = {k: row["release"] for k, row in parents[SCANS.name].items()}
    frames: dict[str, pd.DataFrame] = {}
    by_step = {step: [t for t in CONTRACTS.values() if t.step == step] for step in get_args(Step)}
    for table in by_step["cases"]:
        df = frame(collect_rows(results, table.name), table.model, table.sort_keys)
        frames[table.name], rejected = _validate(
            _with_partitions(df, table, parents), table, parents, checks
        )
        quarantine.extend(rejected)
    for table in by_step["cases"]:
        if table.parent is not None:
            parent = frames[table.parent[1]]
            frames[table.name], orphans = _drop_orphans(frames[table.name], parent, table)
            quarantine.extend(orphans)
    for table in by_step["derived"]:
        assert table.derive is not None and table.derived_from is not None
        rows = _function(table.derive)(frames[table.derived_from])
        df = frame(rows, table.model, table.sort_keys)
        frames[table.name], rejected = _validate(
            _with_partitions(df, table, parents), table, parents, checks
        )
        quarantine.extend(rejected)
    q_rows = [
        {
            **row,
            "severity": "raise" if checks.mode(row["check_name"]) == "raise" else row["severity"],
            "release": _release(row, scan_release),
        }
        for row in quarantine_frame(quarantine)
    ]
    frames[QUARANTINE.name] = QUARANTINE.model.validate(
        frame(q_rows, QUARANTINE.model, QUARANTINE.sort_keys)
    )
    for name, df in frames.items():
        write_table(df, table_dir(generation, name), CONTRACTS[name].model)
    failed: dict[str, int] = {}
    for row in q_rows:
        failed[row["check_name"]] = failed.get(row["check_name"], 0) + 1
    summary = BuildSummary(
        rows={name: len(df) for name, df in sorted(frames.items())},
        cases=len(results),
        converted=sum(r.converted for r in results),
        reused=sum(not r.converted for r in results),
        stores_written=sum(r.stores_written for r in results),
        quarantined=len(q_rows),
        failing=sum(row["severity"] == "raise" for row in q_rows),
        checks_failed=dict(sorted(failed.items())),
    )
    if before_switch is not None:
        before_switch(generation)
    switch_tables(out, generation)
    write_text_atomic(metrics_path(out), _metrics(summary))
    if key is not None:
        record_tables(out, key, _kept(summary))
    return summary


_KEPT = ("rows", "quarantined", "failing", "checks_failed")
"""What a summary says about the tables (the rest counts this build's cases)."""


def _kept(summary: BuildSummary) -> dict[str, Any]:
    return {name: getattr(summary, name) for name in _KEPT}


def _summary(results: Sequence[CaseResult], kept: dict[str, Any]) -> BuildSummary:
    """The summary of unchanged tables: what they hold as recorded, this build's case counts."""
    return BuildSummary(
        rows=dict(kept["rows"]),
        cases=len(results),
        converted=sum(r.converted for r in results),
        reused=sum(not r.converted for r in results),
        stores_written=sum(r.stores_written for r in results),
        quarantined=int(kept["quarantined"]),
        failing=int(kept["failing"]),
        checks_failed=dict(kept["checks_failed"]),
    )


def _metrics(summary: BuildSummary) -> str:
    # Only what is stable between a fresh and an incremental build of the same inputs goes into
    # the DVC metrics file (converted/reused counts vary with the cache).
    data = {
        "rows": summary.rows,
        "quarantined": summary.quarantined,
        "checks_failed": summary.checks_failed,
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
