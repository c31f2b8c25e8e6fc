"""Contract of ``scans.parquet``: one row per VerSe CT scan kept in the dataset."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas.checks import affine_column, orientation_column


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
    release: Series[str] = pa.Field(
        isin=["verse19", "verse20"], description="Release the kept copy comes from."
    )
    split: Series[str] = pa.Field(
        isin=["training", "validation", "test"], description="Official data split of the release."
    )
    direction: Series[str] = pa.Field(
        nullable=True, description="The dir- entity of the file names (ax, sag, iso), if present."
    )
    ct_path: Series[str] = pa.Field(
        description="Source CT file, relative to the VerSe source root."
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
    shape_i: Series[int] = pa.Field(gt=0, description="Voxels along array axis 0 (as stored).")
    shape_j: Series[int] = pa.Field(gt=0, description="Voxels along array axis 1.")
    shape_k: Series[int] = pa.Field(gt=0, description="Voxels along array axis 2.")
    dtype: Series[str] = pa.Field(description="On-disk dtype of the CT voxels (kept in the store).")
    mask_dtype: Series[str] = pa.Field(
        nullable=True,
        description="On-disk dtype of the source mask (the store holds uint8 labels).",
    )
    spacing_i_mm: Series[float] = pa.Field(gt=0, description="Voxel size along axis 0 in mm.")
    spacing_j_mm: Series[float] = pa.Field(gt=0, description="Voxel size along axis 1 in mm.")
    spacing_k_mm: Series[float] = pa.Field(gt=0, description="Voxel size along axis 2 in mm.")
    affine: Series[object] = pa.Field(
        description="Voxel (i, j, k) to RAS+ mm affine, row-major 4x4 as 16 floats."
    )
    orientation: Series[str] = pa.Field(description="Axis codes of the voxel axes, e.g. PIR, LPS.")
    qform_code: Series[int] = pa.Field(ge=0, le=4, description="NIfTI qform_code of the CT.")
    sform_code: Series[int] = pa.Field(ge=0, le=4, description="NIfTI sform_code of the CT.")
    hu_min: Series[float] = pa.Field(description="Minimum CT value (HU).")
    hu_max: Series[float] = pa.Field(description="Maximum CT value (HU).")
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
    ct_voxel_sha256: Series[str] = pa.Field(
        description="sha256 of the CT voxels in Fortran order, equal for source and store."
    )
    mask_voxel_sha256: Series[str] = pa.Field(
        nullable=True, description="sha256 of the uint8 label voxels in Fortran order."
    )
    store_verified: Series[bool] = pa.Field(
        description="True if every chunk of the store (CT, labels, all pyramid levels) was read "
        "back after writing and decoded to the source voxels (params volumes.verify); a "
        "mismatch quarantines the scan instead (check store_verify)."
    )

    class Config:
        strict = True
        coerce = True
        description = "VerSe CT scans: identity, provenance, geometry and scanner."

    @pa.check("affine", name="affine_is_4x4")
    def _affine(cls, series: pd.Series) -> pd.Series:
        return affine_column(series)

    @pa.check("orientation", name="orientation_codes")
    def _orientation(cls, series: pd.Series) -> pd.Series:
        return orientation_column(series)
