"""Contract of ``vertebrae.parquet``: one row per VerSe scan and vertebra label."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from verse_etl.levels import VERSE_LEVELS, VERTEBRA_LABELS


class VertebraeTable(pa.DataFrameModel):
    """One row per scan and vertebra label found in the mask, the centroid file, or both."""

    scan_id: Series[str] = pa.Field(description="Scan id (joins scans.scan_id).")
    label: Series[int] = pa.Field(
        isin=list(VERTEBRA_LABELS),
        description="VerSe label: 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 28 T13.",
    )
    level: Series[str] = pa.Field(
        isin=[VERSE_LEVELS[k] for k in VERTEBRA_LABELS],
        description="Level name of the label (C1..C7, T1..T12, L1..L6, T13).",
    )
    in_mask: Series[bool] = pa.Field(description="The label occurs in the vertebra mask.")
    in_centroids: Series[bool] = pa.Field(
        description="The label has a centroid in the centroid file."
    )
    centroid_i: Series[float] = pa.Field(
        nullable=True, description="Centroid along array axis 0 of the image (voxel index)."
    )
    centroid_j: Series[float] = pa.Field(
        nullable=True, description="Centroid along array axis 1 (voxel index)."
    )
    centroid_k: Series[float] = pa.Field(
        nullable=True, description="Centroid along array axis 2 (voxel index)."
    )
    centroid_x_mm: Series[float] = pa.Field(
        nullable=True, description="Centroid in world RAS+ mm, x (toward patient's right)."
    )
    centroid_y_mm: Series[float] = pa.Field(
        nullable=True, description="Centroid in world RAS+ mm, y (anterior)."
    )
    centroid_z_mm: Series[float] = pa.Field(
        nullable=True, description="Centroid in world RAS+ mm, z (superior)."
    )
    mask_voxels: Series[int] = pa.Field(
        ge=0, description="Voxels carrying this label in the mask (0 if absent)."
    )
    volume_mm3: Series[float] = pa.Field(
        ge=0, description="mask_voxels times the voxel volume, in mm3."
    )

    class Config:
        strict = True
        coerce = True
        unique = ["scan_id", "label"]
        description = "VerSe vertebrae: labels from the mask and the centroid file, in voxel and world coordinates."

    @pa.dataframe_check(name="level_matches_label")
    def _level(cls, df: pd.DataFrame) -> pd.Series:
        return df["label"].map(VERSE_LEVELS) == df["level"]

    @pa.dataframe_check(name="present_somewhere")
    def _present(cls, df: pd.DataFrame) -> pd.Series:
        return df["in_mask"] | df["in_centroids"]
