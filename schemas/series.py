"""Contract of ``series.parquet``: one row per MosMed DICOM series (clean volume or not).

Geometry checks follow idc-index's ``volume_geometry_index`` (same boolean column names);
``verdict`` and ``findings`` name what makes a series not a clean volume. Only tags of the
allow-list ``verse_etl.io.dicom.SERIES_TAGS`` reach this table: no patient name, id, birth date,
address, institution or free-text description.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from verse_etl.schemas.checks import (
    MAX_VOXEL_SPACING_MM,
    PARTITION_NOTE,
    is_affine,
    orientation_column,
)
from verse_etl.schemas.table import Table

from verse_etl.geometry.series import ORDERS, VERDICTS


class SeriesTable(pa.DataFrameModel):
    """One row per DICOM series found in a MosMed study. Only allow-listed tags appear."""

    folder: Series[str] = pa.Field(description="Study folder name (the annotation's Folder).")
    series_uid: Series[str] = pa.Field(
        unique=True,
        description="SeriesInstanceUID, verbatim (MosMed's end in '.'); derived from the "
        "content where the files carry none (series_uid_derived).",
    )
    study_uid: Series[str] = pa.Field(
        description="StudyInstanceUID ('' when the files carry none: de-identified)."
    )
    series_uid_derived: Series[bool] = pa.Field(
        description="True when the files carry no SeriesInstanceUID (missing or empty, as "
        "de-identification leaves them) and series_uid was derived from their content: images "
        "grouped by study folder, SeriesNumber, AcquisitionNumber, ImageType and geometry (as "
        "dcm2niix does), named 2.25.<128-bit hash of that key and the slices' InstanceNumber and "
        "ImagePositionPatient>, the same in every build."
    )
    source_path: Series[str] = pa.Field(
        description="Where the files came from, relative to the MosMed root: dicom/<Folder> or "
        "dicom/<Folder>.tar.gz."
    )
    modality: Series[str] = pa.Field(nullable=True, description="Modality tag (CT).")
    manufacturer: Series[str] = pa.Field(nullable=True, description="Manufacturer tag.")
    model: Series[str] = pa.Field(nullable=True, description="ManufacturerModelName tag.")
    kernel: Series[str] = pa.Field(nullable=True, description="ConvolutionKernel tag.")
    kvp: Series[float] = pa.Field(nullable=True, description="KVP tag (kV).")
    slice_thickness_mm: Series[float] = pa.Field(
        nullable=True, description="SliceThickness tag (mm)."
    )
    series_number: Series[float] = pa.Field(nullable=True, description="SeriesNumber tag.")
    patient_position: Series[str] = pa.Field(
        nullable=True, description="PatientPosition tag (e.g. HFS: head first, supine)."
    )
    transfer_syntax: Series[str] = pa.Field(
        description="Transfer Syntax UID of the first image (compressed ones are decoded)."
    )
    n_files: Series[int] = pa.Field(gt=0, description="Image files with this SeriesInstanceUID.")
    n_localizers: Series[int] = pa.Field(
        ge=0, description="Of those, localizer (scout) images set aside (ImageType LOCALIZER)."
    )
    n_slices: Series[int] = pa.Field(
        ge=0, description="Slices of the volume: n_files minus n_localizers."
    )
    rows: Series[int] = pa.Field(gt=0, description="Rows of each slice (source axis 0).")
    columns: Series[int] = pa.Field(gt=0, description="Columns of each slice (source axis 1).")
    spacing_row_mm: Series[float] = pa.Field(
        nullable=True,
        gt=0,
        le=MAX_VOXEL_SPACING_MM,
        description="PixelSpacing[0]: distance between rows (mm).",
    )
    spacing_col_mm: Series[float] = pa.Field(
        nullable=True,
        gt=0,
        le=MAX_VOXEL_SPACING_MM,
        description="PixelSpacing[1]: distance between columns (mm).",
    )
    slice_step_mm: Series[float] = pa.Field(
        nullable=True,
        ge=0,
        description="Median distance between neighbouring slice positions along the normal (mm).",
    )
    spacing_slice_mm: Series[float] = pa.Field(
        nullable=True,
        gt=0,
        le=MAX_VOXEL_SPACING_MM,
        description="Slice spacing of the store (array axis 2): first-to-last distance along the "
        "normal over n_slices - 1 (mm); null unless converted.",
    )
    orientation: Series[str] = pa.Field(
        nullable=True,
        description="Axis codes (RAS letters) of the [row, column, slice] axes, e.g. PLS.",
    )
    affine: Series[object] = pa.Field(
        nullable=True,
        description="Source frame: voxel (row, column, slice; slices sorted by position, or "
        "the resampled grid's) to RAS+ mm affine, row-major 16 floats; null unless converted. "
        "RAS = diag(-1, -1, 1) x DICOM LPS.",
    )
    store_affine: Series[object] = pa.Field(
        nullable=True,
        description="Store frame: the Zarr array's voxel (z, y, x) to RAS+ mm affine, row-major "
        "16 floats; null unless converted. The store holds the source grid with its axes "
        "permuted and flipped so that z, y, x grow toward superior, posterior, patient's left.",
    )
    tilt_deg: Series[float] = pa.Field(
        nullable=True,
        ge=0,
        description="Gantry tilt measured from the positions: angle between the slice-to-slice "
        "step and the slice normal (degrees).",
    )
    gantry_detector_tilt_deg: Series[float] = pa.Field(
        nullable=True, description="GantryDetectorTilt tag (0018,1120) as written (degrees)."
    )
    rescale_slope: Series[float] = pa.Field(description="RescaleSlope of the first slice.")
    rescale_intercept: Series[float] = pa.Field(description="RescaleIntercept of the first slice.")
    single_orientation: Series[bool] = pa.Field(
        description="idc-index: every slice has the same ImageOrientationPatient."
    )
    orthogonal_orientation: Series[bool] = pa.Field(
        description="idc-index: row and column direction cosines are orthonormal."
    )
    unique_slice_positions: Series[bool] = pa.Field(
        description="idc-index: no two slices share a position along the normal."
    )
    consistent_in_plane_row: Series[bool] = pa.Field(
        description="idc-index: ImagePositionPatient projected on the row direction is constant."
    )
    consistent_in_plane_col: Series[bool] = pa.Field(
        description="idc-index: ImagePositionPatient projected on the column direction is constant."
    )
    consistent_pixel_spacing: Series[bool] = pa.Field(
        description="idc-index: every slice has the same PixelSpacing."
    )
    consistent_image_dimensions: Series[bool] = pa.Field(
        description="idc-index: every slice has the same Rows and Columns."
    )
    uniform_slice_spacing: Series[bool] = pa.Field(
        description="idc-index: slice intervals and positions lie on a regular grid within "
        "mosmed.slice_tolerance_mm."
    )
    missing_slices: Series[int] = pa.Field(
        ge=0, description="Slices missing from gaps that are whole multiples of the slice step."
    )
    instance_order: Series[str] = pa.Field(
        isin=list(ORDERS),
        description="How InstanceNumber runs along the position-sorted slices: ascending, "
        "descending, unordered, duplicate, missing, or unknown (no geometry to sort by).",
    )
    verdict: Series[str] = pa.Field(
        isin=list(VERDICTS),
        description="volume, or the most severe finding (no_geometry, localizer, single_slice, "
        "not_a_volume, mixed_orientation, not_orthogonal, mixed_matrix, gantry_tilt, "
        "in_plane_shift, missing_slices, uneven_spacing).",
    )
    findings: Series[str] = pa.Field(
        description="Every finding, most severe first, comma-separated ('' for a clean volume)."
    )
    is_volume: Series[bool] = pa.Field(
        description="All checks passed (idc-index regularly_spaced_3d_volume) and every slice "
        "decoded: the series was converted."
    )
    problems: Series[str] = pa.Field(
        description="What is wrong, with numbers ('; '-separated, empty if nothing)."
    )
    correction: Series[str] = pa.Field(
        nullable=True,
        isin=["tilt", "equidistant", "tilt,equidistant"],
        description="How a tilted or unevenly spaced series was resampled into its store "
        "(mosmed.tilt = correct; verse_etl.geometry.tilt, as dcm2niix's _Tilt_Eq): tilt (each slice "
        "shifted in its plane by its drift, the plane extended), equidistant (slices "
        "interpolated linearly onto a regular spacing), or both; null when the store holds the "
        "slices as acquired. affine, spacing_slice_mm and the store then describe the resampled "
        "grid; acquired_positions_mm where the slices really were.",
    )
    acquired_positions_mm: Series[object] = pa.Field(
        nullable=True,
        description="Corrected series only: RAS+ position (mm) of every acquired slice, in "
        "position order, flattened x, y, z, x, y, z, ...; with the orientation of affine this "
        "is the acquired geometry (annotation points map to the world through it).",
    )
    annotated: Series[bool] = pa.Field(
        description="A fracture annotation of the study refers to this series."
    )
    store_path: Series[str] = pa.Field(
        nullable=True, description="Zarr store, relative to the build root (null if not converted)."
    )
    voxel_xxh3: Series[str] = pa.Field(
        nullable=True,
        description="XXH3-128 digest (32 hex digits) of the int16 HU voxels in Fortran order.",
    )
    hu_min: Series[float] = pa.Field(nullable=True, description="Minimum HU of the store.")
    hu_max: Series[float] = pa.Field(nullable=True, description="Maximum HU of the store.")

    source: Series[str] = pa.Field(isin=["mosmed"], description="Source dataset." + PARTITION_NOTE)
    release: Series[str] = pa.Field(
        isin=["ctlungca500"],
        description="MosMed release the study comes from (CTLungCa-500)." + PARTITION_NOTE,
    )

    class Config:
        strict = True
        coerce = True
        description = (
            "MosMed DICOM series: identity, scanner, geometry checks and conversion status."
        )

    @pa.check("affine", name="affine_is_4x4_or_null")
    def _affine(cls, series: pd.Series) -> pd.Series:
        return series.map(lambda v: v is None or is_affine(v))

    @pa.check("store_affine", name="store_affine_is_4x4_or_null")
    def _store_affine(cls, series: pd.Series) -> pd.Series:
        return series.map(lambda v: v is None or is_affine(v))

    @pa.check("orientation", name="orientation_codes")
    def _orientation(cls, series: pd.Series) -> pd.Series:
        return orientation_column(series) | series.isna()

    @pa.dataframe_check(name="volume_has_store")
    def _volume_store(cls, df: pd.DataFrame) -> pd.Series:
        # A converted series (clean, or resampled by the tilt correction) has its store and
        # affine; any other has neither.
        converted = df["store_path"].notna()
        corrected = df["correction"].notna()
        return (converted == (df["is_volume"] | corrected)) & (converted == df["affine"].notna())


SERIES = Table(
    name="series",
    model=SeriesTable,
    sort_keys=("folder", "series_uid"),
    step="cases",
    source="mosmed",
    case_column="folder",
    file_column="folder",
    release="ctlungca500",
)
"""``series``: one row per DICOM series, added by its study's case (``verse_etl.mosmed.series``)."""
