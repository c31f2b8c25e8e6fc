"""Contract of ``series.parquet``: one row per MosMed DICOM series (clean volume or not)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas.checks import is_affine


class SeriesTable(pa.DataFrameModel):
    """One row per DICOM series found in a MosMed study folder. Only allow-listed tags appear."""

    folder: Series[str] = pa.Field(description="Study folder name (the annotation's Folder).")
    series_uid: Series[str] = pa.Field(
        unique=True, description="SeriesInstanceUID, verbatim (MosMed's end in '.')."
    )
    study_uid: Series[str] = pa.Field(description="StudyInstanceUID.")
    modality: Series[str] = pa.Field(nullable=True, description="Modality tag (CT).")
    manufacturer: Series[str] = pa.Field(nullable=True, description="Manufacturer tag.")
    model: Series[str] = pa.Field(nullable=True, description="ManufacturerModelName tag.")
    kernel: Series[str] = pa.Field(nullable=True, description="ConvolutionKernel tag.")
    kvp: Series[float] = pa.Field(nullable=True, description="KVP tag (kV).")
    slice_thickness_mm: Series[float] = pa.Field(
        nullable=True, description="SliceThickness tag (mm)."
    )
    n_slices: Series[int] = pa.Field(gt=0, description="Image files in the series.")
    rows: Series[int] = pa.Field(gt=0, description="Rows of each slice.")
    columns: Series[int] = pa.Field(gt=0, description="Columns of each slice.")
    spacing_row_mm: Series[float] = pa.Field(
        nullable=True, gt=0, description="PixelSpacing[0]: distance between rows (mm)."
    )
    spacing_col_mm: Series[float] = pa.Field(
        nullable=True, gt=0, description="PixelSpacing[1]: distance between columns (mm)."
    )
    slice_step_mm: Series[float] = pa.Field(
        nullable=True,
        ge=0,
        description="Median distance between slice positions along the normal (mm).",
    )
    orientation: Series[str] = pa.Field(
        nullable=True, description="Axis codes of the stored [row, column, slice] axes, e.g. PLS."
    )
    affine: Series[object] = pa.Field(
        nullable=True,
        description="Store voxel (row, column, slice) to RAS+ mm affine, row-major 16 floats.",
    )
    tilt_deg: Series[float] = pa.Field(
        nullable=True,
        ge=0,
        description="Gantry tilt: angle between slice step and slice normal (degrees).",
    )
    is_volume: Series[bool] = pa.Field(
        description="All geometry checks passed; the series was converted."
    )
    problems: Series[str] = pa.Field(
        description="Geometry problems found ('; '-separated, empty if none)."
    )
    annotated: Series[bool] = pa.Field(
        description="The study's fracture annotation refers to this series."
    )
    store_path: Series[str] = pa.Field(
        nullable=True, description="Zarr store, relative to the build root (null if not converted)."
    )
    voxel_sha256: Series[str] = pa.Field(
        nullable=True, description="sha256 of the int16 HU voxels in Fortran order."
    )

    class Config:
        strict = True
        coerce = True
        description = "MosMed DICOM series: geometry, scanner and conversion status."

    @pa.check("affine", name="affine_is_4x4_or_null")
    def _affine(cls, series: pd.Series) -> pd.Series:
        return series.map(lambda v: v is None or is_affine(v))
