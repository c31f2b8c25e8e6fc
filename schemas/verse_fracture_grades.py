"""Contract of ``verse_fracture_grades.parquet``: the VerSe'19 grading table in long format.

Source: appendix E1 of Löffler et al., Radiol. Artif. Intell. 2020 (``ryai190138_appendixe1.xlsx``,
CC BY-SA 4.0). One row per scan and level T1..L6; joins ``vertebrae`` on ``(scan_id, label)``.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from verse_etl.schemas.checks import PARTITION_NOTE
from verse_etl.schemas.table import Table

from verse_etl.levels import GRADED_LABELS, VERSE_LEVELS

CELL_VALUES = ["", "0", "1", "2", "3", "x"]


class VerseFractureGradesTable(pa.DataFrameModel):
    """One row per VerSe'19 scan and level T1..L6 of the published fracture grading table."""

    scan_id: Series[str] = pa.Field(
        str_matches=r"^verse\d{3}$", description="Scan id, verse{verse_ID:03d} (joins scans)."
    )
    patient_id: Series[str] = pa.Field(
        str_matches=r"^verse\d{3}$", description="Patient id, verse{subject_ID:03d}."
    )
    label: Series[int] = pa.Field(
        isin=list(GRADED_LABELS), description="VerSe label of the level (joins vertebrae.label)."
    )
    level: Series[str] = pa.Field(
        isin=[VERSE_LEVELS[k] for k in GRADED_LABELS], description="Level name, T1..L6."
    )
    split: Series[str] = pa.Field(
        isin=["training", "validation", "test"],
        nullable=True,
        description="Split named by the 'dataset' column (validation public -> validation, "
        "test secret -> test).",
    )
    dataset: Series[str] = pa.Field(description="The 'dataset' cell as published.")
    age_ct: Series[float] = pa.Field(nullable=True, description="Age at CT (years), age_ct.")
    ct_device: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, isin=[1, 2, 3, 4, 5], description="CT_device code (1-5)."
    )
    ct_device_name: Series[str] = pa.Field(
        nullable=True, description="Scanner of the CT_device code, from the sheet's legend."
    )
    resolution: Series[str] = pa.Field(nullable=True, description="The Res cell, as text.")
    bmd: Series[float] = pa.Field(
        nullable=True, description="BMD cell (mg/cm3) as published (0 in some rows: missing)."
    )
    dxa_t_value: Series[float] = pa.Field(nullable=True, description="DXA T-value cell.")
    ct_image_series: Series[str] = pa.Field(
        nullable=True, description="CT_image_series cell ('k of n' for multi-series patients)."
    )
    n_vertebrae: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, ge=0, description="N_vertebrae cell: vertebrae in the field of view."
    )
    foreign_material_scan: Series[str] = pa.Field(
        nullable=True, description="The scan's foreign_material cell, as text."
    )
    n_fx: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, ge=0, description="N_Fx cell: fractured vertebrae of the scan."
    )
    grade_cell: Series[str] = pa.Field(
        isin=CELL_VALUES, description="The level's _fx-g cell as text ('' empty, 'x' foreign)."
    )
    shape_cell: Series[str] = pa.Field(
        isin=CELL_VALUES, description="The level's _fx-s cell as text."
    )
    fracture_grade: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        isin=[0, 1, 2, 3],
        description="Genant grade: 0 none, 1 mild, 2 moderate, 3 severe (null: not in view or "
        "foreign material).",
    )
    fracture_shape: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        isin=[0, 1, 2, 3],
        description="Fracture shape: 0 none, 1 wedge, 2 biconcave, 3 crush.",
    )
    foreign_material: Series[bool] = pa.Field(
        description="The level is marked 'x' (foreign material, not graded)."
    )
    in_view: Series[bool] = pa.Field(
        description="The grade cell is not empty: the level is in the field of view."
    )
    scan_in_build: Series[bool] = pa.Field(description="The scan is in this build's scans table.")
    in_vertebrae: Series[bool] = pa.Field(
        description="The level is labelled in the scan's mask (a vertebrae row with in_mask)."
    )
    source_path: Series[str] = pa.Field(
        description="The spreadsheet, relative to the VerSe source root."
    )
    source_row: Series[int] = pa.Field(ge=2, description="Row number in sheet VerSe_dataset.")

    source: Series[str] = pa.Field(isin=["verse"], description="Source dataset." + PARTITION_NOTE)
    release: Series[str] = pa.Field(
        isin=["verse19"],
        description="Release the grade table comes with (VerSe'19's spreadsheet)." + PARTITION_NOTE,
    )

    class Config:
        strict = True
        coerce = True
        unique = ["scan_id", "label"]
        description = (
            "VerSe'19 fracture grades (Genant grade and shape) per scan and level T1..L6, with "
            "the scan's clinical columns; joins vertebrae on scan_id and label."
        )

    @pa.dataframe_check(name="level_matches_label")
    def _level(cls, df: pd.DataFrame) -> pd.Series:
        return df["label"].map(VERSE_LEVELS) == df["level"]

    @pa.dataframe_check(
        name="grade_shape_consistent",
        raise_warning=True,
        error="grade and shape disagree (expected both 0, both 1-3, or both empty / x)",
    )
    def _grade_shape(cls, df: pd.DataFrame) -> pd.Series:
        g, s = df["fracture_grade"], df["fracture_shape"]
        both_none = g.isna() & s.isna()
        both_zero = (g == 0) & (s == 0)
        both_fx = (g > 0) & (s > 0)
        return (both_none | both_zero | both_fx).fillna(False).astype(bool)

    @pa.dataframe_check(
        name="n_fx_matches_grades",
        raise_warning=True,
        error="N_Fx differs from the number of levels graded 1-3 (expected equal)",
    )
    def _n_fx(cls, df: pd.DataFrame) -> pd.Series:
        fractured = (df["fracture_grade"] > 0).fillna(False).astype(int)
        counted = fractured.groupby(df["scan_id"]).transform("sum")
        return (df["n_fx"].isna() | (df["n_fx"] == counted)).fillna(True).astype(bool)

    @pa.dataframe_check(
        name="graded_level_not_in_mask",
        raise_warning=True,
        error="the level is graded (in view) but not labelled in the scan's mask",
    )
    def _graded_in_mask(cls, df: pd.DataFrame) -> pd.Series:
        return ~(df["scan_in_build"] & df["in_view"]) | df["in_vertebrae"]

    @pa.dataframe_check(
        name="labelled_level_not_graded",
        raise_warning=True,
        error="the level is labelled in the scan's mask but its grade cell is empty",
    )
    def _labelled_graded(cls, df: pd.DataFrame) -> pd.Series:
        return ~df["in_vertebrae"] | df["in_view"]

    @pa.dataframe_check(
        name="bmd_plausible",
        raise_warning=True,
        error="BMD is 0 or negative (expected empty or > 0; 0 stands for a missing value)",
    )
    def _bmd(cls, df: pd.DataFrame) -> pd.Series:
        return (df["bmd"].isna() | (df["bmd"] > 0)).astype(bool)


VERSE_FRACTURE_GRADES = Table(
    name="verse_fracture_grades",
    model=VerseFractureGradesTable,
    sort_keys=("scan_id", "label"),
    step="cases",
    source="verse",
    case_column="scan_id",
    file_column="source_path",
    release="verse19",
)
"""``verse_fracture_grades``: the VerSe'19 grade spreadsheet's rows, added by the VerSe source's
grades result (``verse_etl.verse.fracture_grades``)."""
