"""The VerSe'19 fracture grading table (appendix E1 of Löffler et al., Radiol. Artif. Intell. 2020).

File ``ryai190138_appendixe1.xlsx`` (``shared/specs/VERSE.md`` §5), sheet ``VerSe_dataset``, one row
per VerSe'19 scan::

    verse_ID, subject_ID, dataset, age_ct, CT_device, Res, BMD, DXA T-value, CT_image_series,
    N_vertebrae, foreign_material, N_Fx, T1_fx-g ... L6_fx-g, T1_fx-s ... L6_fx-s

``*_fx-g`` is the Genant grade (0 none, 1 mild, 2 moderate, 3 severe), ``*_fx-s`` the shape (0
none, 1 wedge, 2 biconcave, 3 crush); ``x`` marks foreign material, an empty cell a vertebra not
in the field of view. Values are mixed int, float and text in the real file.

It becomes the long table ``verse_fracture_grades``: one row per scan and level T1..L6, the scan's
own columns repeated, joined to ``vertebrae`` by ``scan_id`` and ``label`` (``in_vertebrae``).
Cells that cannot be read are kept as text in ``grade_cell``/``shape_cell`` and rejected by the
table's contract; a spreadsheet that is not this table is reported, never guessed at.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from verse_etl.cases.hashing import case_code_identity, fingerprint
from verse_etl.cases.records import (
    CaseResult,
    QuarantineRecord,
    load_cached,
    load_saved,
    quarantine_record,
    write_text_atomic,
)
from verse_etl.errors import InputError
from verse_etl.io.files import SourceFile
from verse_etl.levels import GRADED_LABELS, VERSE_LEVELS
from verse_etl.paths import case_result_path
from verse_etl.schemas.verse_fracture_grades import VERSE_FRACTURE_GRADES

SOURCE = "verse"
TABLE = VERSE_FRACTURE_GRADES.name
CASE_ID = "_fracture_grades"
SHEET = "VerSe_dataset"
SCAN_COLUMNS: tuple[str, ...] = (
    "verse_ID",
    "subject_ID",
    "dataset",
    "age_ct",
    "CT_device",
    "Res",
    "BMD",
    "DXA T-value",
    "CT_image_series",
    "N_vertebrae",
    "foreign_material",
    "N_Fx",
)
COLUMNS: tuple[str, ...] = (
    *SCAN_COLUMNS,
    *(f"{VERSE_LEVELS[label]}_fx-g" for label in GRADED_LABELS),
    *(f"{VERSE_LEVELS[label]}_fx-s" for label in GRADED_LABELS),
)
"""The 48 columns of sheet ``VerSe_dataset``, in the published order."""
CT_DEVICES: dict[int, str] = {
    1: "Philips Brilliance 64",
    2: "Philips iCT",
    3: "Philips IQon",
    4: "Siemens Definition AS+",
    5: "Siemens Definition AS",
}
"""``CT_device`` codes of the legend (sheet ``info``)."""
SPLITS: dict[str, str] = {
    "training": "training",
    "validation public": "validation",
    "validation": "validation",
    "test secret": "test",
    "test": "test",
    "tr": "training",
    "pubt": "validation",
    "doct": "test",
}
"""``dataset`` values (and the legend's abbreviations) -> split names of the releases."""


def _text(value: Any) -> str:
    """A cell as text: '' for empty, integral floats without '.0' (3.0 -> '3')."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def _number(value: Any) -> float | None:
    text = _text(value)
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _whole(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def read_fracture_grades(
    source: SourceFile, root: Path
) -> tuple[list[dict[str, Any]], list[QuarantineRecord]]:
    """Read the grading table into long-format rows (one per scan and level T1..L6).

    Parameters
    ----------
    source
        The ``.xlsx`` file (on disk or in a zip).
    root
        VerSe source root (``source_path`` is relative to it).

    Returns
    -------
    rows : list of dict
        ``verse_fracture_grades`` rows without the join columns (``scan_in_build``,
        ``in_vertebrae``), which :func:`join_vertebrae` adds.
    problems : list of QuarantineRecord
        Rows whose ids cannot be read, and numeric cells that are not numbers (left null).

    Raises
    ------
    InputError
        If the file is not a spreadsheet, has no sheet ``VerSe_dataset``, or lacks columns.
    """
    from openpyxl import load_workbook

    path = source.relative(root)
    try:
        workbook = load_workbook(io.BytesIO(source.read_bytes()), read_only=True, data_only=True)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(
            source, f"not a readable .xlsx workbook ({e})", "re-download it", "fracture_grades_file"
        ) from e
    try:
        if SHEET not in workbook.sheetnames:
            raise InputError(
                source,
                f"no sheet {SHEET!r} (expected the VerSe'19 grading table, got sheets "
                f"{workbook.sheetnames})",
                "remove the file from the VerSe source folder or restore the published one",
                check="fracture_grades_file",
            )
        rows_iter = workbook[SHEET].iter_rows(values_only=True)
        header = [_text(h) for h in next(rows_iter, ())]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise InputError(
                source,
                f"sheet {SHEET} lacks columns {missing[:6]}{' ...' if len(missing) > 6 else ''} "
                f"(expected the 48 published columns)",
                "restore the published appendix E1 file",
                check="fracture_grades_file",
            )
        at = {name: header.index(name) for name in COLUMNS}
        rows: list[dict[str, Any]] = []
        problems: list[QuarantineRecord] = []
        for number, values in enumerate(rows_iter, start=2):
            cells = {name: values[i] if i < len(values) else None for name, i in at.items()}
            if all(_text(v) == "" for v in cells.values()):
                continue  # trailing empty rows of the sheet
            rows += _scan_rows(cells, path, number, problems)
    finally:
        workbook.close()
    return rows, problems


def _scan_rows(
    cells: dict[str, Any], path: str, number: int, problems: list[QuarantineRecord]
) -> list[dict[str, Any]]:
    verse_id, subject_id = _whole(cells["verse_ID"]), _whole(cells["subject_ID"])
    if verse_id is None or subject_id is None:
        problems.append(
            quarantine_record(
                SOURCE,
                f"row {number}",
                path,
                "fracture_grades_row",
                f"sheet {SHEET} row {number} has no whole-number verse_ID and subject_ID (got "
                f"{_text(cells['verse_ID'])!r}, {_text(cells['subject_ID'])!r})",
                fix="the row is left out",
                table=TABLE,
            )
        )
        return []
    scan_id = f"verse{verse_id:03d}"

    def number_of(column: str) -> float | None:
        value = _number(cells[column])
        if value is None and _text(cells[column]) != "":
            problems.append(
                quarantine_record(
                    SOURCE,
                    scan_id,
                    path,
                    "fracture_grades_cell",
                    f"sheet {SHEET} row {number} column {column} is not a number (got "
                    f"{_text(cells[column])!r})",
                    fix="left empty",
                    table=TABLE,
                )
            )
        return value

    dataset = _text(cells["dataset"])
    device = number_of("CT_device")
    n_vertebrae, n_fx = number_of("N_vertebrae"), number_of("N_Fx")
    scan = {
        "scan_id": scan_id,
        "patient_id": f"verse{subject_id:03d}",
        "split": SPLITS.get(dataset.lower()),
        "dataset": dataset,
        "age_ct": number_of("age_ct"),
        "ct_device": int(device) if device is not None and device.is_integer() else None,
        "ct_device_name": CT_DEVICES.get(int(device))
        if device is not None and device.is_integer()
        else None,
        "resolution": _text(cells["Res"]) or None,
        "bmd": number_of("BMD"),
        "dxa_t_value": number_of("DXA T-value"),
        "ct_image_series": _text(cells["CT_image_series"]) or None,
        "n_vertebrae": int(n_vertebrae)
        if n_vertebrae is not None and n_vertebrae.is_integer()
        else None,
        "foreign_material_scan": _text(cells["foreign_material"]) or None,
        "n_fx": int(n_fx) if n_fx is not None and n_fx.is_integer() else None,
        "source_path": path,
        "source_row": number,
    }
    rows = []
    for label in GRADED_LABELS:
        level = VERSE_LEVELS[label]
        grade_cell = _text(cells[f"{level}_fx-g"]).lower()
        shape_cell = _text(cells[f"{level}_fx-s"]).lower()
        rows.append(
            {
                **scan,
                "label": label,
                "level": level,
                "grade_cell": grade_cell,
                "shape_cell": shape_cell,
                "fracture_grade": _code(grade_cell),
                "fracture_shape": _code(shape_cell),
                "foreign_material": grade_cell == "x" or shape_cell == "x",
                "in_view": grade_cell != "",
            }
        )
    return rows


def _code(cell: str) -> int | None:
    return int(cell) if re.fullmatch(r"[0-3]", cell) else None


def join_vertebrae(rows: list[dict[str, Any]], results: Sequence[CaseResult]) -> None:
    """Add ``scan_in_build`` and ``in_vertebrae`` to each grade row, from the case results."""
    scans = {r["scan_id"] for result in results for r in result.rows.get("scans", [])}
    vertebrae = {
        (r["scan_id"], r["label"])
        for result in results
        for r in result.rows.get("vertebrae", [])
        if r.get("in_mask")
    }
    for row in rows:
        row["scan_in_build"] = row["scan_id"] in scans
        row["in_vertebrae"] = (row["scan_id"], row["label"]) in vertebrae


def _grades_key(digests: dict[str, str], graded: set[str], results: Sequence[CaseResult]) -> str:
    """Key of the grades result: the spreadsheets (``digests``), and the scans and labels of
    the ``graded`` scans it joins to (not other scans: a VerSe'20 scan coming or going leaves
    it, and its "unchanged" state, alone)."""
    joined = sorted(
        (r["scan_id"], int(r["label"]), bool(r.get("in_mask")))
        for result in results
        for r in result.rows.get("vertebrae", [])
        if r["scan_id"] in graded
    )
    scans = sorted(
        r["scan_id"]
        for result in results
        for r in result.rows.get("scans", [])
        if r["scan_id"] in graded
    )
    return fingerprint(
        case_code_identity("verse_etl.verse.fracture_grades"), CASE_ID, digests, joined, scans
    )


def saved_grades_result(
    cache: Path, digests: dict[str, str], results: Sequence[CaseResult]
) -> CaseResult | None:
    """The saved grades result if it is still the result, found without parsing the
    spreadsheets: the scans it graded are those its rows name (every graded row is kept), so
    its key is computed again from those, the spreadsheets' ``digests`` and ``results``; the
    same key means the same spreadsheets and code, hence the same graded scans."""
    saved = load_saved(cache)
    if saved is None or not saved.fingerprint:
        return None
    graded = {str(r["scan_id"]) for r in saved.rows.get(TABLE, [])}
    return saved if _grades_key(digests, graded, results) == saved.fingerprint else None


def fracture_grades_result(
    sources: Sequence[SourceFile],
    root: Path,
    results: Sequence[CaseResult],
    out: Path | None = None,
) -> CaseResult:
    """Rows of ``verse_fracture_grades`` from every grading table found, joined to the scans.

    A file that is not the grading table becomes one quarantine record; the build goes on.
    With ``out``, the result is saved like a case's and reused while the spreadsheets and the
    scans and labels it joins to are unchanged.
    """
    cache = case_result_path(out, SOURCE, CASE_ID) if out is not None else None
    digests = {s.relative(root): s.sha256() for s in sources}
    if cache is not None and (saved := saved_grades_result(cache, digests, results)) is not None:
        return saved  # the spreadsheets are not parsed again (openpyxl: ~1 s)
    parsed: list[tuple[list[dict[str, Any]], list[QuarantineRecord]] | InputError] = []
    for source in sources:
        try:
            parsed.append(read_fracture_grades(source, root))
        except InputError as e:
            parsed.append(e)
    # The result depends on the spreadsheets and on the scans they grade, not on other scans:
    # a VerSe'20 scan coming or going leaves it (and its "unchanged" state) alone.
    graded = {r["scan_id"] for p in parsed if not isinstance(p, InputError) for r in p[0]}
    key = _grades_key(digests, graded, results)
    if cache is not None:
        cached = load_cached(cache, key)
        if cached is not None:
            return cached
    result = CaseResult(source=SOURCE, case_id=CASE_ID, fingerprint=key)
    for item in parsed:
        if isinstance(item, InputError):
            result.quarantine.append(
                QuarantineRecord.from_error(item, SOURCE, CASE_ID, root, table=TABLE)
            )
            continue
        rows, problems = item
        join_vertebrae(rows, results)
        for row in rows:
            # Checked against the contract once complete (join_vertebrae adds two columns).
            result.add(TABLE, VERSE_FRACTURE_GRADES.row(row))
        result.quarantine.extend(problems)
    if cache is not None:
        write_text_atomic(cache, result.to_json())
    return result
