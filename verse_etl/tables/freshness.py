"""Tables left as they are when nothing they are made from changed, as QC pictures are.

The tables step (:func:`verse_etl.tables.assemble.assemble`) reads every saved case result,
validates every table and writes them all as a new generation. Its output depends only on: the
case results (their saved JSON, in the order given), the check parameters, the code of the
contracts and of the tables step (:func:`tables_code_identity`), and what the caller's
``before_switch`` adds (the dataset card: its own inputs, given as ``inputs``). The key of those
(:func:`tables_key`) is recorded, after the tables are switched into place, in
``<out>/digests/tables.json`` (local state beside the source-digest caches, not an output), with
the sha256 of every file the step published (every table, the card, ``metrics.json``) and the
summary it returned.

A later tables step with the same key, whose published files still have those digests, writes
nothing (:func:`unchanged_tables`): no new generation, no switch; the dataset stays as it is, so
a dataset still switches as one. Anything else (another key, a file changed, removed or added
under ``tables/``, a missing or unreadable record, another format) rebuilds; the record is
deleted before a rebuild and written after the switch, so a build killed in between rebuilds
next time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from verse_etl.cases.hashing import code_identity, fingerprint, sha256_file
from verse_etl.cases.records import CaseResult, write_text_atomic
from verse_etl.params import CheckParams
from verse_etl.paths import (
    DIGESTS_DIR,
    REPORT_DIR,
    TABLES_DIR,
    case_result_name,
    ensure_inside,
    metrics_path,
)

FORMAT = 1
_NAMED_FUNCTION = re.compile(r"[\"'](verse_etl\.[\w.]+):\w+[\"']")


def tables_state_path(out: Path) -> Path:
    """Where the key of the published tables is recorded (local state, not an output)."""
    return ensure_inside(out, out / DIGESTS_DIR / "tables.json")


def tables_code_identity() -> str:
    """Code identity of the tables step: ``verse_etl.tables.assemble``'s closure, every contract
    module and the functions contracts name as ``"module:function"`` (derived rows, quarantine
    files), which no import statement reaches."""
    import verse_etl

    spec = importlib.util.find_spec("verse_etl.schemas")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    entries = {"verse_etl.tables.assemble", "verse_etl.schemas"}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.py")):
            entries.add(f"verse_etl.schemas.{path.stem}")
            entries.update(_NAMED_FUNCTION.findall(path.read_text(encoding="utf-8")))
    root = Path(verse_etl.__file__).resolve().parent.parent
    return code_identity(root, tuple(sorted(entries)))


def result_digest(text: str) -> str:
    """sha256 of a case result's saved JSON (:meth:`CaseResult.to_json`)."""
    return hashlib.sha256(text.encode()).hexdigest()


def tables_key(
    result_digests: Sequence[tuple[str, str, str]], checks: CheckParams, inputs: Any
) -> str:
    """Key of the tables made from results with these ``(source, saved file name, digest)``
    (in the order the tables step gets them), ``checks``, and the caller's ``inputs``
    (JSON-able)."""
    return fingerprint(FORMAT, tables_code_identity(), list(result_digests), checks, inputs)


def results_key(results: Sequence[CaseResult], checks: CheckParams, inputs: Any) -> str:
    """:func:`tables_key` of results in memory."""
    digests = [
        (r.source, case_result_name(r.source, r.case_id), result_digest(r.to_json()))
        for r in results
    ]
    return tables_key(digests, checks, inputs)


def published_files(out: Path) -> dict[str, str]:
    """sha256 of every file the tables step publishes: below ``tables/``, and ``metrics.json``."""
    files = {}
    tables = out / TABLES_DIR
    for path in sorted(tables.rglob("*")) if tables.is_dir() else []:
        if path.is_file():
            files[path.relative_to(out).as_posix()] = sha256_file(path)
    metrics = metrics_path(out)
    if metrics.is_file():
        files[metrics.relative_to(out).as_posix()] = sha256_file(metrics)
    return files


def unchanged_tables(out: Path, key: str) -> dict[str, Any] | None:
    """The summary recorded with the published tables if they were made under ``key`` and every
    published file is as it was written; else None (the tables are made again)."""
    try:
        state = json.loads(tables_state_path(out).read_text(encoding="utf-8"))
        if state.get("format") != FORMAT or state.get("key") != key:
            return None
        files, summary = state["files"], state["summary"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not files or published_files(out) != files or not isinstance(summary, dict):
        return None
    return summary


def forget_tables(out: Path) -> None:
    """Delete the record before the tables are written again (a killed write then rebuilds)."""
    tables_state_path(out).unlink(missing_ok=True)


def record_tables(out: Path, key: str, summary: dict[str, Any]) -> None:
    """Record ``key`` and ``summary`` with the digests of the files just published."""
    state = {"format": FORMAT, "key": key, "summary": summary, "files": published_files(out)}
    write_text_atomic(tables_state_path(out), json.dumps(state, indent=0, sort_keys=True))


def report_state_path(out: Path) -> Path:
    """Where the report records what it was drawn from (local state, not an output)."""
    return ensure_inside(out, out / DIGESTS_DIR / "report.json")


def _report_key(out: Path) -> str:
    """The report's inputs: the published tables (every file's digest) and the code of the
    report and its pictures (the pictures' voxels are named by the tables' voxel digests)."""
    import verse_etl

    root = Path(verse_etl.__file__).resolve().parent.parent
    return fingerprint(
        FORMAT, code_identity(root, ("verse_etl.report.page",)), published_files(out)
    )


def _report_files(out: Path) -> dict[str, str]:
    report = out / REPORT_DIR
    return {
        p.relative_to(out).as_posix(): sha256_file(p)
        for p in (sorted(report.rglob("*")) if report.is_dir() else [])
        if p.is_file()
    }


def record_report(out: Path) -> None:
    """Record, after the report is written, what it was drawn from and its files' digests."""
    state = {"format": FORMAT, "key": _report_key(out), "files": _report_files(out)}
    write_text_atomic(report_state_path(out), json.dumps(state, indent=0, sort_keys=True))


def report_unchanged(out: Path) -> bool:
    """True if the report was drawn from the published tables by the current code and its
    files are as written (a report step would write the same)."""
    try:
        state = json.loads(report_state_path(out).read_text(encoding="utf-8"))
        key, files = state["key"], state["files"]
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return bool(files) and key == _report_key(out) and files == _report_files(out)
