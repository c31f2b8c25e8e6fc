"""A synthetic VerSe'19 fracture grading table in the published spreadsheet layout.

Layout of ``ryai190138_appendixe1.xlsx`` (``shared/specs/VERSE.md`` §5): sheet ``VerSe_dataset``
with 48 columns (one row per VerSe'19 scan) and a legend sheet ``info``. Cells mix ints, floats,
``x`` and empty cells as the real file does. The bytes depend on the content only: workbook
timestamps and zip entry times are fixed.
"""

from __future__ import annotations

import datetime
import io
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from verse_etl_sample.manifest import VerseScanManifest
from verse_etl_sample.output import write_bytes_atomic

FILE_NAME = "ryai190138_appendixe1.xlsx"
LEVELS = (*(f"T{i}" for i in range(1, 13)), *(f"L{i}" for i in range(1, 7)))
HEADER = (
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
    *(f"{level}_fx-g" for level in LEVELS),
    *(f"{level}_fx-s" for level in LEVELS),
)
LEGEND = (
    ("dataset", "Tr: training, pubT: public test, docT: hidden test"),
    ("CT_device", "1 Philips Brilliance 64, 2 Philips iCT, 3 Philips IQon, "
     "4 Siemens Definition AS+, 5 Siemens Definition AS"),
    ("fx-g", "0 no fracture, 1 mild, 2 moderate, 3 severe, x foreign material"),
    ("fx-s", "0 no fracture, 1 wedge, 2 biconcave, 3 crush, x foreign material"),
)  # fmt: skip
_FIXED_TIME = datetime.datetime(2020, 3, 25, 0, 0, 0)


def grading_rows(
    scans: Sequence[VerseScanManifest], rng: np.random.Generator
) -> list[list[object]]:
    """Rows of sheet ``VerSe_dataset`` for the VerSe'19 scans, plus one scan not in the sample.

    The extra row (``verse099``, validation) stands for the rows of scans a user did not
    download; it must appear in the table without matching any scan.
    """
    verse19 = [s for s in scans if s.release == "verse19"]
    series_count: dict[str, int] = {}
    for s in verse19:
        series_count[s.patient_id] = series_count.get(s.patient_id, 0) + 1
    seen: dict[str, int] = {}
    rows: list[list[object]] = []
    for n, scan in enumerate(verse19):
        seen[scan.patient_id] = seen.get(scan.patient_id, 0) + 1
        grades = {label: (g, sh) for label, g, sh in scan.grades}
        # The real file mixes ints and floats; every other scan is written with floats.
        as_float = n % 2 == 1
        cells_g: list[object] = []
        cells_s: list[object] = []
        for label in range(8, 26):
            if label in grades:
                g, sh = grades[label]
                cells_g.append(float(g) if as_float else g)
                cells_s.append(float(sh) if as_float else sh)
            else:
                cells_g.append(None)  # not in the field of view
                cells_s.append(None)
        rows.append(
            [
                int(scan.scan_id[5:]),
                int(scan.patient_id[5:]),
                "training",
                int(rng.integers(40, 86)),
                scan.device,
                "x".join(f"{v:g}" for v in scan.spacing_mm),
                round(float(rng.uniform(60, 200)), 1),
                round(float(rng.uniform(-3.5, 1.0)), 1) if rng.random() < 0.5 else None,
                f"{seen[scan.patient_id]} of {series_count[scan.patient_id]}",
                len(scan.labels),
                0,
                sum(1 for g, _ in grades.values() if g > 0),
                *cells_g,
                *cells_s,
            ]
        )
    extra_g = [None] * 7 + [0, 0, 1, 0, "x", 0] + [None] * 5  # T8..L1 in view, T12 foreign
    extra_s = [None] * 7 + [0, 0, 1, 0, "x", 0] + [None] * 5
    rows.append([99, 99, "validation public", 71, 2, "1x1x1", 131.5, None, "1 of 1", 6, 1, 1,
                 *extra_g, *extra_s])  # fmt: skip
    return rows


def write_fracture_grades(
    path: Path, scans: Sequence[VerseScanManifest], rng: np.random.Generator
) -> None:
    """Write the grading spreadsheet for ``scans`` to ``path`` (atomically, deterministically)."""
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "VerSe_dataset"
    sheet.append(list(HEADER))
    for row in grading_rows(scans, rng):
        sheet.append(row)
    info = workbook.create_sheet("info")
    for entry in LEGEND:
        info.append(list(entry))
    workbook.properties.created = _FIXED_TIME
    workbook.properties.modified = _FIXED_TIME
    workbook.properties.creator = "verse-etl sample"
    buffer = io.BytesIO()
    workbook.save(buffer)
    write_bytes_atomic(path, _fixed_zip(buffer.getvalue()))


def _fixed_zip(data: bytes) -> bytes:
    """The same zip with fixed entry times and fixed document timestamps (byte-stable)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                stamp = _FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
                content = re.sub(
                    rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(<)",
                    rb"\g<1>" + stamp + rb"\2",
                    content,
                )
            entry = zipfile.ZipInfo(info.filename, date_time=(2020, 3, 25, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(entry, content)
    return out.getvalue()
