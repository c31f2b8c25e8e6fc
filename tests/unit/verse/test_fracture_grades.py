"""The VerSe'19 grading spreadsheet: the published layout, odd cells, and its cross-checks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from openpyxl import Workbook

from verse_etl.cases.records import CaseResult
from verse_etl.io.files import SourceFile
from verse_etl.params import CheckParams
from verse_etl.tables.assemble import assemble
from verse_etl.tables.parquet import read_table
from verse_etl.verse.fracture_grades import COLUMNS, fracture_grades_result, read_fracture_grades
from verse_etl_sample import write_sample
from verse_etl_sample.fracture_grades import HEADER


def _workbook(path: Path, rows: list[list[object]], header=HEADER, sheet="VerSe_dataset") -> Path:
    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    ws.append(list(header))
    for row in rows:
        ws.append(row)
    wb.save(path)
    return path


def _row(verse_id: int, grades: dict[str, object], **scan: object) -> list[object]:
    base = {"verse_ID": verse_id, "subject_ID": verse_id, "dataset": "training", "BMD": 150.0}
    base.update(scan)
    levels = [c[: -len("_fx-g")] for c in HEADER if c.endswith("_fx-g")]
    cells = [base.get(c) for c in HEADER[:12]]
    cells += [grades.get(level) for level in levels]
    cells += [grades.get(level) for level in levels]  # shape = grade code: consistent
    return cells


def _tables(path: Path, root: Path, results: list[CaseResult] | None = None) -> dict:
    results = list(results or [])
    results.append(fracture_grades_result([SourceFile(path)], root, results))
    summary = assemble(results, root / "out", CheckParams())
    return {n: read_table(root / "out", n).to_pandas() for n in summary.rows}


def test_sample_spreadsheet_has_the_published_layout(tmp_path: Path) -> None:
    manifest = write_sample(tmp_path, verse_cases=4, mosmed_studies=0, size="tiny")
    from openpyxl import load_workbook

    wb = load_workbook(tmp_path / manifest.fracture_grades, read_only=True)
    assert wb.sheetnames == ["VerSe_dataset", "info"]
    header = next(wb["VerSe_dataset"].iter_rows(values_only=True))
    assert tuple(header) == COLUMNS and len(header) == 48
    assert header[:3] == ("verse_ID", "subject_ID", "dataset") and header[-1] == "L6_fx-s"


def test_cells_are_parsed_like_the_real_file(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "g.xlsx",
        [_row(4, {"T12": 2, "L1": 1.0, "L2": "x", "L3": 0}, N_Fx=2, BMD=0, CT_device=4.0)],
    )
    rows, problems = read_fracture_grades(SourceFile(path), tmp_path)
    assert not problems and len(rows) == 18
    by_level = {r["level"]: r for r in rows}
    assert (by_level["T12"]["fracture_grade"], by_level["L1"]["fracture_grade"]) == (2, 1)
    assert by_level["L2"]["foreign_material"] and by_level["L2"]["fracture_grade"] is None
    assert by_level["L3"]["fracture_grade"] == 0 and by_level["L3"]["in_view"]
    assert not by_level["T1"]["in_view"] and by_level["T1"]["grade_cell"] == ""
    assert by_level["T1"]["ct_device_name"] == "Siemens Definition AS+"
    tables = _tables(path, tmp_path)
    q = tables["quarantine"]
    # BMD 0 (a missing value in the real file) is kept and flagged on each of the 18 rows.
    assert (q["check_name"] == "bmd_plausible").sum() == 18
    assert len(tables["verse_fracture_grades"]) == 18


def test_bad_cells_and_rows_are_quarantined(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "g.xlsx",
        [
            _row(8, {"T10": 4, "T11": 1}, N_Fx=3, age_ct="old"),
            ["?", None, "training"] + [None] * 45,
            _row(9, {"L1": 2}, N_Fx=1),
        ],
    )
    tables = _tables(path, tmp_path)
    q = tables["quarantine"]
    checks = set(q["check_name"])
    assert "fracture_grades_row" in checks and "fracture_grades_cell" in checks
    bad_grade = q[q["check_name"].str.contains("isin")]
    assert bad_grade["case_id"].tolist() == ["verse008"] and "T10" in bad_grade["record"].item()
    # N_Fx says 3, one level is graded 1-3 (T10's 4 is rejected): flagged on verse008's rows.
    assert set(q[q["check_name"] == "n_fx_matches_grades"]["case_id"]) == {"verse008"}
    grades = tables["verse_fracture_grades"]
    assert sorted(set(grades["scan_id"])) == ["verse008", "verse009"]
    assert len(grades) == 17 + 18
    assert grades[grades["scan_id"] == "verse008"]["age_ct"].isna().all()


def test_spreadsheet_that_is_not_the_table_is_reported(tmp_path: Path) -> None:
    other = _workbook(tmp_path / "notes.xlsx", [[1, 2]], header=["a", "b"], sheet="Sheet1")
    short = _workbook(tmp_path / "short.xlsx", [[1]], header=["verse_ID", "subject_ID"])
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"not a workbook")
    result = fracture_grades_result([SourceFile(p) for p in (other, short, broken)], tmp_path, [])
    reasons = [q.reason for q in result.quarantine]
    assert [q.check for q in result.quarantine] == ["fracture_grades_file"] * 3
    assert "no sheet 'VerSe_dataset'" in reasons[0] and "lacks columns" in reasons[1]
    assert "not a readable .xlsx" in reasons[2] and not result.rows


def test_grades_are_cross_checked_with_the_masks(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "g.xlsx", [_row(4, {"T12": 0, "L1": 0}, N_Fx=0)])
    scan = CaseResult(source="verse", case_id="verse004", fingerprint="")
    # L1 labelled and graded; T12 graded but not labelled; L2 labelled but not graded.
    scan.add("scans", {"scan_id": "verse004"})
    for label in (20, 21):
        scan.add("vertebrae", {"scan_id": "verse004", "label": label, "in_mask": True})
    result = fracture_grades_result([SourceFile(path)], tmp_path, [scan])
    got = pd.DataFrame(result.rows["verse_fracture_grades"]).set_index("level")
    assert got.loc["L1", "in_vertebrae"] and not got.loc["T12", "in_vertebrae"]
    assert got["scan_in_build"].all()
    from verse_etl.schemas import VerseFractureGradesTable

    from verse_etl.tables.validation import validate_table

    # The partition keys are filled in by assemble for every table.
    df = pd.DataFrame(result.rows["verse_fracture_grades"]).assign(
        source="verse", release="verse19"
    )
    good, records = validate_table(
        df,
        VerseFractureGradesTable,
        table="verse_fracture_grades",
        source_of=lambda r: "verse",
        case_of=lambda r: r["scan_id"],
        file_of=lambda r, _check: r["source_path"],
        checks=CheckParams(),
    )
    assert len(good) == 18
    flagged = {(r.check, json.loads(r.record)["label"]) for r in records}
    assert flagged == {("graded_level_not_in_mask", 19), ("labelled_level_not_graded", 21)}


def test_an_unchanged_spreadsheet_is_not_parsed_again(tmp_path: Path, monkeypatch) -> None:
    """The saved result is reused without reading the workbook while the spreadsheet and the
    graded scans' labels are unchanged; a changed label or spreadsheet parses it again."""
    import verse_etl.verse.fracture_grades as grades

    path = _workbook(tmp_path / "g.xlsx", [_row(4, {"T12": 0, "L1": 0}, N_Fx=0)])
    scan = CaseResult(source="verse", case_id="verse004", fingerprint="")
    scan.add("scans", {"scan_id": "verse004"})
    scan.add("vertebrae", {"scan_id": "verse004", "label": 20, "in_mask": True})
    out = tmp_path / "out"
    first = fracture_grades_result([SourceFile(path)], tmp_path, [scan], out)
    parsed = []
    real = grades.read_fracture_grades
    monkeypatch.setattr(grades, "read_fracture_grades", lambda *a: parsed.append(1) or real(*a))
    again = fracture_grades_result([SourceFile(path)], tmp_path, [scan], out)
    assert again.to_json() == first.to_json() and not again.converted
    assert not parsed
    scan.add("vertebrae", {"scan_id": "verse004", "label": 21, "in_mask": True})
    fracture_grades_result([SourceFile(path)], tmp_path, [scan], out)
    _workbook(path, [_row(4, {"T12": 1, "L1": 0}, N_Fx=1)])
    changed = fracture_grades_result([SourceFile(path)], tmp_path, [scan], out)
    assert len(parsed) == 2 and changed.fingerprint != first.fingerprint
