"""Case results -> validated tables, Parquet files and build metrics."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from verse_etl.cases.records import CaseResult, QuarantineRecord, write_text_atomic
from verse_etl.mosmed.case import drop_duplicate_series
from verse_etl.mosmed.consensus import consensus_rows
from verse_etl.params import CheckParams
from verse_etl.paths import metrics_path, table_dir
from verse_etl.publish.generations import generation_dir, remove_stale_generations, switch_tables
from verse_etl.schemas import SORT_KEYS, TABLES
from verse_etl.sources.verse import release_split
from verse_etl.tables.parquet import collect_rows, frame, quarantine_frame, write_table
from verse_etl.tables.validation import validate_table

# How to name the source, case and file of a row of each table in a quarantine record.
_ROW_ORIGIN = {
    "scans": ("verse", "scan_id", "ct_path"),
    "vertebrae": ("verse", "scan_id", "scan_id"),
    "verse_fracture_grades": ("verse", "scan_id", "source_path"),
    "series": ("mosmed", "folder", "folder"),
    "mosmed_vertebrae": ("mosmed", "folder", "annotation_path"),
    "mosmed_expert_pairs": ("mosmed", "folder", "annotation_path_v1"),
}

# Tables derived from other validated tables rather than from case rows: (name, function, origin).
_DERIVED = (
    ("mosmed_consensus", consensus_rows, "mosmed_vertebrae", ("mosmed", "folder", "folder")),
)


# The release partition of rows whose table has no release of its own (see schemas/checks.py).
MOSMED_STUDY_RELEASE = "ctlungca500"
_FIXED_RELEASE = {
    "verse_fracture_grades": "verse19",
    "series": MOSMED_STUDY_RELEASE,
    "mosmed_expert_pairs": "v2",
}


def _with_partitions(
    df: pd.DataFrame, name: str, source: str, scan_release: dict[str, str]
) -> pd.DataFrame:
    """Fill the partition keys (source, release) of the rows of table ``name``."""
    df = df.copy()
    df["source"] = source
    if name in _FIXED_RELEASE:
        df["release"] = _FIXED_RELEASE[name]
    elif name == "vertebrae":
        df["release"] = [scan_release.get(s, "unknown") for s in df["scan_id"]]
    return df


def _quarantine_release(row: dict[str, object], scan_release: dict[str, str]) -> str:
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
    return release if release in ("v1", "v2") else MOSMED_STUDY_RELEASE


# Checks about a vertebra's centroid; their records name the centroid file, as do those of a
# label only the centroid file lists. Every other vertebra record names the mask.
_CENTROID_CHECKS = frozenset(
    {"centroid_outside_volume", "centroid_outside_label", "centroid_without_mask_label"}
)


def _vertebra_file(scan: dict[str, Any], row: pd.Series, check: str) -> str:
    """The file a quarantine record of a vertebra row names (it has no file column itself)."""
    about_centroid = check in _CENTROID_CHECKS or (row["in_centroids"] and not row["in_mask"])
    order = ("centroids_path", "mask_path") if about_centroid else ("mask_path", "centroids_path")
    return next((scan[k] for k in (*order, "ct_path") if scan.get(k)), str(row["scan_id"]))


# Rows whose parent row was rejected are rejected too: no vertebra without its scan.
_PARENTS = (
    ("vertebrae", "scan_id", "scans"),
    ("mosmed_vertebrae", "series_uid", "series"),
    ("mosmed_expert_pairs", "series_uid", "series"),
)


def _drop_orphans(
    child: pd.DataFrame, parent: pd.DataFrame, key: str, table: str
) -> tuple[pd.DataFrame, list[QuarantineRecord]]:
    source, case_col, file_col = _ROW_ORIGIN[table]
    orphan = ~child[key].isin(set(parent[key]))
    records = [
        QuarantineRecord(
            source=source,
            case_id=str(row[case_col]),
            table=table,
            file=str(row[file_col]),
            check="parent_rejected",
            reason=f"{row[file_col]}: {table} row left out because its {key} {row[key]!r} was rejected",
            record=json.dumps(row.to_dict(), default=str, sort_keys=True),
        )
        for _, row in child[orphan].iterrows()
    ]
    return child[~orphan].reset_index(drop=True), records


@dataclass(frozen=True)
class BuildSummary:
    """What one build produced."""

    rows: dict[str, int]
    cases: int
    converted: int
    reused: int
    stores_written: int
    quarantined: int
    failing: int  # quarantine records whose check is set to "raise"
    checks_failed: dict[str, int] = field(default_factory=dict)
    # Per source given to the build: what became of cases an earlier build had and this one did
    # not (pruned, or kept and why; see verse_etl.publish.pruning).
    pruning: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """Deterministic JSON (the DVC metrics file)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def assemble(
    results: Sequence[CaseResult],
    out: Path,
    checks: CheckParams,
    before_switch: Callable[[Path], object] | None = None,
) -> BuildSummary:
    """Validate every table, publish the Parquet files as one generation, write the metrics.

    Every table is written into a new generation folder; ``before_switch(generation)`` adds
    what must become visible with them (the dataset card, written below
    ``generation/tables``); then :func:`verse_etl.publish.generations.switch_tables` replaces the
    published tables in one step. Tables are written even when some rows fail a ``raise``
    check: the caller decides to fail the build after everything good is on disk. Leftovers of
    a killed earlier run are removed first.
    """
    remove_stale_generations(out)
    for leftover in [*out.glob("tables/.*.tmp-*"), *out.glob("tables/.*.old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in out.glob("*.tmp-*"):
        leftover.unlink(missing_ok=True)
    generation = generation_dir(out)
    # A MosMed series found in two study folders is kept once (as VerSe scans are).
    results, duplicates = drop_duplicate_series(results)
    quarantine: list[QuarantineRecord] = [q for r in results for q in r.quarantine] + duplicates
    frames: dict[str, pd.DataFrame] = {}
    scans = {row["scan_id"]: row for row in collect_rows(results, "scans")}
    scan_release = {scan_id: row["release"] for scan_id, row in scans.items()}
    for name, (source, case_col, file_col) in _ROW_ORIGIN.items():
        model = TABLES[name]
        df = frame(collect_rows(results, name), model, SORT_KEYS[name])
        df = _with_partitions(df, name, source, scan_release)
        good, rejected = validate_table(
            df,
            model,
            table=name,
            source_of=lambda _row, s=source: s,
            case_of=lambda row, c=case_col: row[c],
            file_of=(lambda row, check: _vertebra_file(scans.get(row["scan_id"], {}), row, check))
            if name == "vertebrae"
            else (lambda row, _check, f=file_col: row[f]),
            checks=checks,
        )
        frames[name] = good
        quarantine.extend(rejected)
    for child, key, parent in _PARENTS:
        frames[child], orphans = _drop_orphans(frames[child], frames[parent], key, child)
        quarantine.extend(orphans)
    for name, derive, base, (source, case_col, file_col) in _DERIVED:
        df = frame(derive(frames[base]), TABLES[name], SORT_KEYS[name])
        df = _with_partitions(df, name, source, scan_release)
        frames[name], rejected = validate_table(
            df,
            TABLES[name],
            table=name,
            source_of=lambda _row, s=source: s,
            case_of=lambda row, c=case_col: row[c],
            file_of=lambda row, _check, f=file_col: row[f],
            checks=checks,
        )
        quarantine.extend(rejected)
    q_rows = [
        {
            **row,
            "severity": "raise" if checks.mode(row["check_name"]) == "raise" else row["severity"],
            "release": _quarantine_release(row, scan_release),
        }
        for row in quarantine_frame(quarantine)
    ]
    frames["quarantine"] = frame(q_rows, TABLES["quarantine"], SORT_KEYS["quarantine"])
    frames["quarantine"] = TABLES["quarantine"].validate(frames["quarantine"])
    for name, df in frames.items():
        write_table(df, table_dir(generation, name), TABLES[name])
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
    return summary


def _metrics(summary: BuildSummary) -> str:
    # Only what is stable between a fresh and an incremental build of the same inputs goes into
    # the DVC metrics file (converted/reused counts vary with the cache).
    data = {
        "rows": summary.rows,
        "quarantined": summary.quarantined,
        "checks_failed": summary.checks_failed,
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
