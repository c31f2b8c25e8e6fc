"""Contract of ``scans.parquet``: one row per VerSe CT scan kept in the dataset."""

from __future__ import annotations

import itertools

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from verse_etl.schemas.checks import (
    MAX_VOXEL_SPACING_MM,
    PARTITION_NOTE,
    VERSE_RELEASES,
    affine_column,
    orientation_column,
)
from verse_etl.schemas.table import Table


class ScansTable(pa.DataFrameModel):
    """One row per VerSe scan (CT plus its vertebra mask and centroids)."""

    scan_id: Series[str] = pa.Field(
        unique=True,
        str_matches=r"^(verse|gl)\d{3}$",
        description="Scan id: the split- entity if present, else the subject (e.g. verse201, gl003).",
    )
    patient_id: Series[str] = pa.Field(
        str_matches=r"^(verse|gl)\d{3}$",
        description="Patient (subject) id; several scans may share one (split- entity).",
    )
    split: Series[str] = pa.Field(
        isin=["training", "validation", "test"],
        nullable=True,
        description="Official data split of the release (null if a MICCAI folder does not say).",
    )
    layout: Series[str] = pa.Field(
        isin=["subject", "miccai"],
        description="Release layout of the kept copy: subject-based (BIDS-like) or MICCAI flat.",
    )
    direction: Series[str] = pa.Field(
        nullable=True, description="The dir- entity of the file names (ax, sag, iso), if present."
    )
    ct_path: Series[str] = pa.Field(
        description="Source CT file, relative to the VerSe source root; a member of a release zip "
        "is named as if the zip were a folder (dataset-verse19training.zip/dataset-verse19training/...)."
    )
    ct_sha256: Series[str] = pa.Field(
        str_length={"min_value": 64, "max_value": 64}, description="sha256 of the source CT file."
    )
    mask_path: Series[str] = pa.Field(
        nullable=True, description="Source vertebra mask file, relative to the source root."
    )
    mask_sha256: Series[str] = pa.Field(
        nullable=True, description="sha256 of the source mask file."
    )
    centroids_path: Series[str] = pa.Field(
        nullable=True, description="Source centroid JSON, relative to the source root."
    )
    centroids_sha256: Series[str] = pa.Field(
        nullable=True, description="sha256 of the source centroid file."
    )
    centroid_format: Series[str] = pa.Field(
        isin=["subject", "miccai19", "miccai20"],
        nullable=True,
        description="Centroid file convention: subject (voxel indices with a direction element), "
        "miccai19 / miccai20 (millimetres along fixed axes IPL / PIR).",
    )
    centroid_axes: Series[str] = pa.Field(
        nullable=True,
        description="Axis codes the centroid file's X, Y, Z run along (its direction element, or "
        "the MICCAI convention); converted onto the image's own axes.",
    )
    sidecar_path: Series[str] = pa.Field(
        nullable=True, description="Source _ct.json scanner sidecar, relative to the source root."
    )
    other_copies: Series[str] = pa.Field(
        nullable=True,
        description="CT files of other copies of this scan that were left out ('; '-separated), "
        "e.g. the same scan in the other release.",
    )
    shape_i: Series[int] = pa.Field(
        gt=0, description="Voxels along axis 0 of the source NIfTI (source frame)."
    )
    shape_j: Series[int] = pa.Field(gt=0, description="Voxels along source axis 1.")
    shape_k: Series[int] = pa.Field(gt=0, description="Voxels along source axis 2.")
    dtype: Series[str] = pa.Field(description="On-disk dtype of the CT voxels (kept in the store).")
    mask_dtype: Series[str] = pa.Field(
        nullable=True,
        description="On-disk dtype of the source mask (the store holds uint8 labels).",
    )
    spacing_i_mm: Series[float] = pa.Field(
        gt=0, le=MAX_VOXEL_SPACING_MM, description="Voxel size along source axis 0 in mm."
    )
    spacing_j_mm: Series[float] = pa.Field(
        gt=0, le=MAX_VOXEL_SPACING_MM, description="Voxel size along source axis 1 in mm."
    )
    spacing_k_mm: Series[float] = pa.Field(
        gt=0, le=MAX_VOXEL_SPACING_MM, description="Voxel size along source axis 2 in mm."
    )
    affine: Series[object] = pa.Field(
        description="Source frame: the NIfTI's voxel (i, j, k) to RAS+ mm affine, exactly as in "
        "the file, row-major 4x4 as 16 floats."
    )
    orientation: Series[str] = pa.Field(
        description="Axis codes of the source voxel axes, e.g. PIR, LPS."
    )
    store_affine: Series[object] = pa.Field(
        description="Store frame: the Zarr arrays' voxel (z, y, x) to RAS+ mm affine, row-major "
        "16 floats. The store holds the source grid with its axes permuted and flipped so that "
        "z, y, x grow toward superior, posterior, patient's left (nearest axes; no resampling)."
    )
    qform_code: Series[int] = pa.Field(ge=0, le=4, description="NIfTI qform_code of the CT.")
    sform_code: Series[int] = pa.Field(ge=0, le=4, description="NIfTI sform_code of the CT.")
    hu_min: Series[float] = pa.Field(description="Minimum CT value (HU).")
    hu_max: Series[float] = pa.Field(description="Maximum CT value (HU).")
    hu_mean: Series[float] = pa.Field(description="Mean CT value (HU).")
    hu_p01: Series[float] = pa.Field(
        description="1st percentile of the CT values (HU; exact, numpy's linear definition)."
    )
    hu_p05: Series[float] = pa.Field(description="5th percentile of the CT values (HU).")
    hu_p25: Series[float] = pa.Field(description="25th percentile of the CT values (HU).")
    hu_p50: Series[float] = pa.Field(description="Median CT value (HU).")
    hu_p75: Series[float] = pa.Field(description="75th percentile of the CT values (HU).")
    hu_p95: Series[float] = pa.Field(description="95th percentile of the CT values (HU).")
    hu_p99: Series[float] = pa.Field(description="99th percentile of the CT values (HU).")
    kvp: Series[float] = pa.Field(
        nullable=True, description="Tube voltage (kV) from the _ct.json sidecar."
    )
    manufacturer: Series[str] = pa.Field(
        nullable=True, description="Scanner manufacturer from the sidecar."
    )
    model: Series[str] = pa.Field(nullable=True, description="Scanner model from the sidecar.")
    n_mask_labels: Series[int] = pa.Field(ge=0, description="Distinct vertebra labels in the mask.")
    n_centroids: Series[int] = pa.Field(
        ge=0, description="Vertebra centroids in the centroid file."
    )
    store_path: Series[str] = pa.Field(
        description="Zarr store of this scan, relative to the build root."
    )
    ct_voxel_xxh3: Series[str] = pa.Field(
        description="XXH3-128 digest (32 hex digits) of the CT voxels in Fortran order, as in "
        "the source and the store."
    )
    mask_voxel_xxh3: Series[str] = pa.Field(
        nullable=True,
        description="XXH3-128 digest (32 hex digits) of the uint8 label voxels in Fortran order.",
    )
    store_verified: Series[bool] = pa.Field(
        description="True if every chunk of the store (CT, labels, all pyramid levels) was "
        "decoded after encoding and equalled the source voxels, and every shard file read back "
        "after writing held exactly those chunks (params volumes.verify); a mismatch "
        "quarantines the scan instead (check store_verify)."
    )

    source: Series[str] = pa.Field(isin=["verse"], description="Source dataset." + PARTITION_NOTE)
    release: Series[str] = pa.Field(
        isin=VERSE_RELEASES, description="Release the kept copy comes from." + PARTITION_NOTE
    )

    class Config:
        strict = True
        coerce = True
        description = "VerSe CT scans: identity, provenance, geometry and scanner."

    @pa.check("affine", name="affine_is_4x4")
    def _affine(cls, series: pd.Series) -> pd.Series:
        return affine_column(series)

    @pa.check("store_affine", name="store_affine_is_4x4")
    def _store_affine(cls, series: pd.Series) -> pd.Series:
        return affine_column(series)

    @pa.check("orientation", name="orientation_codes")
    def _orientation(cls, series: pd.Series) -> pd.Series:
        return orientation_column(series)

    @pa.dataframe_check(name="hu_percentiles_ordered")
    def _percentiles(cls, df: pd.DataFrame) -> pd.Series:
        columns = ["hu_min", "hu_p01", "hu_p05", "hu_p25", "hu_p50", "hu_p75", "hu_p95", "hu_p99"]
        columns.append("hu_max")
        ordered = pd.Series(True, index=df.index)
        for lower, upper in itertools.pairwise(columns):
            # Float CTs are binned at whole HU, so a percentile may sit 0.5 HU beyond min/max.
            ordered &= df[lower] <= df[upper] + 0.5
        return ordered


SCANS = Table(
    name="scans",
    model=ScansTable,
    sort_keys=("scan_id",),
    step="cases",
    source="verse",
    case_column="scan_id",
    file_column="ct_path",
)
"""``scans``: one row per VerSe scan, added by its case (``verse_etl.verse.scan``)."""
