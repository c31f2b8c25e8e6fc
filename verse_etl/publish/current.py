"""Would a build change anything? Answered from what is on disk, before any orchestration starts.

A ``verse-etl build`` with nothing to do still paid the process start, Prefect's imports and
its server (~40 s of a 58 s rerun under load) to find every case unchanged, rewrite nothing and
redraw nothing. :func:`unchanged_build` answers the same question from the build folder alone:

- discovery of every given source (what the build would submit);
- each case's saved result under the key a build would compute (its files' digests taken from
  the stat caches only: a file whose stat changed would be hashed, so the answer is "build"),
  with its stores complete; the source-level results (duplicates, discovery problems, the
  VerSe'19 grades, MosMed's discovery problems) equal to what the build would save;
- no saved result of a case gone from its source (pruning decides those), no store that no
  saved result holds, no leftover of a killed writer (the build would delete them);
- the tables recorded under the key of exactly those results, the check parameters, the code
  and the card's inputs, with every published file as written, and no check set to ``raise``
  failing (the build would fail);
- the report drawn from those tables by the same code, its files as written.

Anything missing, unreadable or different means "build": a wrong "unchanged" would hide a
change, a wrong "changed" only costs a build. URL builds, ``--rehash`` and sources whose folder
is missing always build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verse_etl.cases.outputs import SOURCES, store_paths
from verse_etl.cases.records import CaseResult
from verse_etl.errors import VerseEtlError
from verse_etl.params import BuildParams
from verse_etl.paths import CASES_DIR, VOLUMES_DIR, case_result_name, case_result_path
from verse_etl.publish.card import card_inputs
from verse_etl.publish.lock import workspace_lock
from verse_etl.publish.stamp import start_stamp, write_stamp
from verse_etl.tables.freshness import (
    report_unchanged,
    result_digest,
    tables_key,
    unchanged_tables,
)
from verse_etl.tables.summary import BuildSummary
from verse_etl.targets import is_url


@dataclass(frozen=True)
class BuildCheck:
    """What :func:`unchanged_build` found: the summary a build would print if nothing would
    change (else None), and why."""

    summary: BuildSummary | None
    reason: str


class _Changed(VerseEtlError):
    """Something a build would change (the message says what); never leaves this module."""


def unchanged_build(params: BuildParams, wait: float = 0.0) -> BuildCheck:
    """Whether ``verse-etl build`` with ``params`` would change nothing (see the module
    docstring), looked at under the workspace lock (waiting up to ``wait`` seconds for it, as
    the build would); never raises for what it cannot read or a busy workspace: those are
    reasons to build (the build then reports them)."""
    try:
        if is_url(params.out) or not Path(params.out).is_dir():
            return BuildCheck(_check(params), "nothing changed")  # raises _Changed
        with workspace_lock(Path(params.out), timeout=wait):
            # The stamp's stats are taken before the check reads anything, its outputs' after:
            # the next rerun with nothing changed is answered from them (verse_etl.publish.stamp).
            start = start_stamp(params)
            summary = _check(params)
            if start is not None:
                write_stamp(start, summary)
            return BuildCheck(summary, "nothing changed")
    except _Changed as e:
        return BuildCheck(None, str(e))
    except (VerseEtlError, OSError, ValueError, KeyError, TypeError) as e:
        return BuildCheck(None, f"could not tell ({type(e).__name__}: {e})")


def _check(params: BuildParams) -> BuildSummary:
    if is_url(params.out):
        raise _Changed("a build to a URL is always run")
    if params.rehash:
        raise _Changed("--rehash: every source file is hashed again")
    out = Path(params.out)
    if not out.is_dir():
        raise _Changed(f"{out}: no build yet")
    cases: list[CaseResult] = []
    for source in SOURCES:
        root_text = getattr(params.sources, source)
        if not root_text:
            continue  # left out of the build: its outputs are kept as they are
        root = Path(root_text)
        if not root.is_dir():
            raise _Changed(f"{root}: source folder missing")
        found, derived = (
            _verse(root, out, params) if source == "verse" else _mosmed(root, out, params)
        )
        _same_saved_results(out, source, [*found, *derived])
        _no_garbage(out, source, [*found, *derived])
        cases += found
    summary = _tables(out, params)
    if not report_unchanged(out):
        raise _Changed("report: not drawn from the current tables by this code")
    return summary.as_rerun(len(cases))


def saved_case_result(
    source: str, case: Any, root: Path, out: Path, params: BuildParams
) -> CaseResult | None:
    """The saved result a build with ``params`` would reuse for ``case`` (a VerSe scan or a
    MosMed study of ``source``) as it is, found without reading any source file; None if the
    build would run it (:func:`verse_etl.verse.case.saved_verse_result`,
    :func:`verse_etl.mosmed.case.saved_mosmed_result`)."""
    if source == "verse":
        from verse_etl.verse.case import saved_verse_result

        return saved_verse_result(case, root, out, params.volumes, params.checks)
    from verse_etl.mosmed.case import saved_mosmed_result

    return saved_mosmed_result(case, root, out, params.volumes, params.mosmed, params.checks.limits)


def _verse(root: Path, out: Path, params: BuildParams) -> tuple[list[CaseResult], list[CaseResult]]:
    from verse_etl.cases.records import discovery_result
    from verse_etl.sources.verse import discover_verse_sources
    from verse_etl.verse.case import SOURCE, duplicate_scans_result
    from verse_etl.verse.fracture_grades import CASE_ID, saved_grades_result

    found = discover_verse_sources(root)
    scans = []
    for scan in found.scans:
        saved = saved_case_result(SOURCE, scan, root, out, params)
        if saved is None:
            raise _Changed(f"verse {scan.scan_id}: changed (or its stat cache or store is gone)")
        scans.append(saved)
    derived = [duplicate_scans_result(list(found.duplicates), root)] if found.duplicates else []
    derived += [discovery_result(SOURCE, found.problems, root)] if found.problems else []
    _same_as_saved(out, derived)
    if found.grade_tables:
        digests = {s.relative(root): s.sha256() for s in found.grade_tables}
        grades = saved_grades_result(case_result_path(out, SOURCE, CASE_ID), digests, scans)
        if grades is None:
            raise _Changed("verse fracture grades: changed")
        derived.append(grades)
    return scans, derived


def _mosmed(
    root: Path, out: Path, params: BuildParams
) -> tuple[list[CaseResult], list[CaseResult]]:
    from verse_etl.mosmed.case import SOURCE, source_results
    from verse_etl.sources.mosmed import discover_mosmed, read_id_mapping

    mapping = read_id_mapping(Path(params.mosmed.id_mapping)) if params.mosmed.id_mapping else ()
    studies = []
    for study in discover_mosmed(root, params.mosmed.annotation_dirs, mapping):
        saved = saved_case_result(SOURCE, study, root, out, params)
        if saved is None:
            raise _Changed(f"mosmed {study.folder}: changed (or its stat cache or store is gone)")
        studies.append(saved)
    derived = source_results(root, params.mosmed.annotation_dirs)
    _same_as_saved(out, derived)
    return studies, derived


def _same_as_saved(out: Path, results: list[CaseResult]) -> None:
    """Source-level results computed again equal the saved ones (the build saves them)."""
    for result in results:
        path = case_result_path(out, result.source, result.case_id)
        if not path.is_file() or path.read_text(encoding="utf-8") != result.to_json():
            raise _Changed(f"{result.source} {result.case_id}: changed")


def _same_saved_results(out: Path, source: str, results: list[CaseResult]) -> None:
    """The saved results of ``source`` are exactly this build's (none of a case gone, no
    leftover of a killed write)."""
    expected = {case_result_name(source, r.case_id) for r in results}
    folder = out / CASES_DIR / source
    saved = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if saved != expected:
        raise _Changed(
            f"{source}: saved results differ from the cases found ({len(saved ^ expected)})"
        )


def _no_garbage(out: Path, source: str, results: list[CaseResult]) -> None:
    """Every store (and nothing half-written) below ``volumes/<source>`` is held by a result."""
    keep = set(store_paths(results))
    volumes = out / VOLUMES_DIR / source
    pattern = ("*",) if source == "verse" else ("*/*",)
    found = (
        {p.relative_to(out).as_posix() for g in pattern for p in volumes.glob(g)}
        if volumes.is_dir()
        else set()
    )
    if found != keep:
        raise _Changed(f"{source}: stores differ from those the results hold ({len(found ^ keep)})")


def _tables(out: Path, params: BuildParams) -> BuildSummary:
    """The recorded summary of the published tables if they are those of the saved results."""
    digests = [
        (source, path.name, result_digest(path.read_text(encoding="utf-8")))
        for source in SOURCES
        for path in sorted((out / CASES_DIR / source).glob("*.json"))
    ]
    key = tables_key(digests, params.checks, card_inputs(params))
    kept = unchanged_tables(out, key)
    if kept is None:
        raise _Changed("tables: not made from the current results, parameters and code")
    if kept["failing"]:
        raise _Changed(f"tables: {kept['failing']} record(s) fail checks set to 'raise'")
    return BuildSummary(
        rows=dict(kept["rows"]),
        cases=0,
        converted=0,
        reused=0,
        stores_written=0,
        quarantined=int(kept["quarantined"]),
        failing=int(kept["failing"]),
        checks_failed=dict(kept["checks_failed"]),
    )
