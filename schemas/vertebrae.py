"""Contract of ``vertebrae.parquet``: one row per VerSe scan and vertebra label.

Two kinds of checks live here. Contract checks (types, the label map, one row per scan and label)
must hold for every published row: a failing row is left out and quarantined. Quality checks
(``raise_warning=True``: mask and centroid labels agree both ways, centroids inside the volume
and inside their own label, no tiny label islands, cranio-caudal order, no gap in the levels)
describe the source data: a failing row stays in the
table and is reported in ``quarantine`` (``params.yaml: checks`` decides whether that fails the
build).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from verse_etl.schemas.anatomy import centroid_label_findings, level_gap_findings, passes
from verse_etl.schemas.checks import PARTITION_NOTE, VERSE_RELEASES
from verse_etl.schemas.table import Table

from verse_etl.levels import VERSE_LEVELS, VERTEBRA_LABELS

ANATOMICAL_ORDER: tuple[int, ...] = (*range(1, 20), 28, *range(20, 26))
"""Labels from cranial to caudal: C1..C7, T1..T12, T13 (label 28), L1..L6."""
_RANK = {label: rank for rank, label in enumerate(ANATOMICAL_ORDER)}


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
        nullable=True,
        description="Source frame: centroid along axis 0 of the source NIfTI (voxel index; "
        "scans.affine maps it to RAS+ mm).",
    )
    centroid_j: Series[float] = pa.Field(
        nullable=True, description="Source frame: centroid along source axis 1 (voxel index)."
    )
    centroid_k: Series[float] = pa.Field(
        nullable=True, description="Source frame: centroid along source axis 2 (voxel index)."
    )
    centroid_store_z: Series[float] = pa.Field(
        nullable=True,
        description="Store frame: centroid along the Zarr arrays' axis 0 (voxel index, NGFF "
        "axis z, growing toward superior; scans.store_affine maps it to RAS+ mm).",
    )
    centroid_store_y: Series[float] = pa.Field(
        nullable=True,
        description="Store frame: centroid along store axis 1 (voxel index, NGFF y, growing "
        "toward posterior).",
    )
    centroid_store_x: Series[float] = pa.Field(
        nullable=True,
        description="Store frame: centroid along store axis 2 (voxel index, NGFF x, growing "
        "toward the patient's left).",
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
    centroid_in_volume: Series[bool] = pa.Field(
        description="The centroid lies inside the image (within half a voxel of the edge "
        "voxels); False when there is no centroid."
    )
    mask_label_at_centroid: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        description="Mask value at the voxel nearest the centroid (0 background; the body "
        "centroid of C1 often falls outside C1). Null without centroid or mask.",
    )
    mask_voxels: Series[int] = pa.Field(
        ge=0, description="Voxels carrying this label in the mask (0 if absent)."
    )
    volume_mm3: Series[float] = pa.Field(
        ge=0, description="mask_voxels times the voxel volume, in mm3."
    )
    bbox_i_min: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        ge=0,
        description="Source frame: bounding box of the label, first voxel along source axis 0.",
    )
    bbox_i_max: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        ge=0,
        description="Source frame: bounding box, last voxel along source axis 0 (inclusive).",
    )
    bbox_j_min: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        ge=0,
        description="Source frame: bounding box, first voxel along source axis 1.",
    )
    bbox_j_max: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        ge=0,
        description="Source frame: bounding box, last voxel along source axis 1 (inclusive).",
    )
    bbox_k_min: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        ge=0,
        description="Source frame: bounding box, first voxel along source axis 2.",
    )
    bbox_k_max: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        ge=0,
        description="Source frame: bounding box, last voxel along source axis 2 (inclusive).",
    )
    com_x_mm: Series[float] = pa.Field(
        nullable=True,
        description="Centre of mass of the label's voxels in world RAS+ mm, x (whole vertebra, "
        "posterior elements included, so it lies behind the body centroid).",
    )
    com_y_mm: Series[float] = pa.Field(
        nullable=True, description="Centre of mass in world RAS+ mm, y (anterior)."
    )
    com_z_mm: Series[float] = pa.Field(
        nullable=True, description="Centre of mass in world RAS+ mm, z (superior)."
    )
    centroid_to_com_mm: Series[float] = pa.Field(
        nullable=True,
        ge=0,
        description="Distance between the centroid and the label's centre of mass (mm): the "
        "centroid file checked against the mask. The centroid marks the vertebral body, the "
        "centre of mass includes the posterior elements, so they differ; an outlier among a "
        "scan's vertebrae points at a misplaced centroid or a mislabelled mask. Null unless "
        "the vertebra is in both.",
    )
    n_components: Series[int] = pa.Field(
        ge=0, description="26-connected pieces the label forms in the mask (0 if absent)."
    )
    n_islands: Series[int] = pa.Field(
        ge=0,
        description="Pieces smaller than params checks.min_island_voxels (spurious islands).",
    )
    island_voxels: Series[int] = pa.Field(ge=0, description="Voxels in those islands.")

    source: Series[str] = pa.Field(isin=["verse"], description="Source dataset." + PARTITION_NOTE)
    release: Series[str] = pa.Field(
        isin=VERSE_RELEASES,
        description="Release of the vertebra's scan (scans.release)." + PARTITION_NOTE,
    )

    class Config:
        strict = True
        coerce = True
        unique = ["scan_id", "label"]
        description = (
            "VerSe vertebrae: labels from the mask and the centroid file, centroids in voxel and "
            "world coordinates, mask statistics (volume, bounding box, centre of mass, pieces)."
        )

    @classmethod
    def findings(cls, check: str, df: pd.DataFrame) -> pd.Series | None:
        """What a quality check found in each row (None where nothing), naming the levels."""
        if check == "centroid_outside_label":
            return centroid_label_findings(df)
        if check == "level_sequence_gap":
            return level_gap_findings(df, ["scan_id"])
        return None

    @pa.dataframe_check(name="level_matches_label")
    def _level(cls, df: pd.DataFrame) -> pd.Series:
        return df["label"].map(VERSE_LEVELS) == df["level"]

    @pa.dataframe_check(name="present_somewhere")
    def _present(cls, df: pd.DataFrame) -> pd.Series:
        return df["in_mask"] | df["in_centroids"]

    @pa.dataframe_check(
        name="mask_label_without_centroid",
        raise_warning=True,
        error="the label is in the mask but the centroid file has no centroid for it (expected both); check the centroid file",
    )
    def _mask_without_centroid(cls, df: pd.DataFrame) -> pd.Series:
        return ~df["in_mask"] | df["in_centroids"]

    @pa.dataframe_check(
        name="centroid_without_mask_label",
        raise_warning=True,
        error="the centroid file lists the label but the mask does not contain it (expected both); check the mask",
    )
    def _centroid_without_mask(cls, df: pd.DataFrame) -> pd.Series:
        return ~df["in_centroids"] | df["in_mask"]

    @pa.dataframe_check(
        name="centroid_outside_volume",
        raise_warning=True,
        error="the centroid lies outside the image (expected voxel indices within the volume); the file may belong to another image or use other axes",
    )
    def _centroid_inside(cls, df: pd.DataFrame) -> pd.Series:
        return ~df["in_centroids"] | df["centroid_in_volume"]

    @pa.dataframe_check(
        name="centroid_outside_label",
        raise_warning=True,
        error="the centroid does not lie in its own label (expected the mask value at the centroid to be the label; see mask_label_at_centroid, 0 = background); a C1 body centroid often falls outside C1, otherwise the centroid or the label is misplaced: look at the QC picture",
    )
    def _centroid_in_label(cls, df: pd.DataFrame) -> pd.Series:
        at = df["mask_label_at_centroid"]
        return at.isna() | ~df["in_mask"] | (at == df["label"]).fillna(True).astype(bool)

    @pa.dataframe_check(
        name="level_sequence_gap",
        raise_warning=True,
        error="the scan's levels must form an unbroken run (expected every level between the "
        "first and the last; T13 and L6 optional); a vertebra is missing or mislabelled",
    )
    def _gap(cls, df: pd.DataFrame) -> pd.Series:
        return passes(level_gap_findings(df, ["scan_id"]))

    @pa.dataframe_check(
        name="label_islands",
        raise_warning=True,
        error="the label has pieces smaller than checks.min_island_voxels (expected one solid vertebra); spurious islands of a mislabelled voxel group, see n_islands and island_voxels",
    )
    def _islands(cls, df: pd.DataFrame) -> pd.Series:
        return df["n_islands"] == 0

    @pa.dataframe_check(
        name="craniocaudal_order",
        raise_warning=True,
        error="the label is not below its cranial neighbour and above its caudal one (expected height to fall from C1 to L6); labels swapped or misplaced",
    )
    def _order(cls, df: pd.DataFrame) -> pd.Series:
        return craniocaudal_ok(df)


def craniocaudal_ok(df: pd.DataFrame) -> pd.Series:
    """False for both rows of every pair of anatomically adjacent labels (within a scan) whose
    height (world z: centroid, else mask centre of mass) is not decreasing from cranial to
    caudal, i.e. labels that are swapped or misplaced.

    Examples
    --------
    >>> df = pd.DataFrame({"scan_id": ["a"] * 3, "label": [20, 21, 22],
    ...     "centroid_z_mm": [100.0, 60.0, 80.0], "com_z_mm": [None] * 3})
    >>> craniocaudal_ok(df).tolist()
    [True, False, False]
    """
    z = df["centroid_z_mm"].astype(float).fillna(df["com_z_mm"].astype(float))
    rank = df["label"].map(_RANK)
    ok = pd.Series(True, index=df.index)
    usable = z.notna() & rank.notna()
    frame = pd.DataFrame({"scan": df["scan_id"], "rank": rank, "z": z})[usable]
    for _, group in frame.sort_values(["scan", "rank"]).groupby("scan", sort=False):
        heights = group["z"].to_numpy()
        bad = np.flatnonzero(heights[1:] >= heights[:-1])
        for n in bad:
            ok[group.index[n]] = False
            ok[group.index[n + 1]] = False
    return ok


VERTEBRAE = Table(
    name="vertebrae",
    model=VertebraeTable,
    sort_keys=("scan_id", "label"),
    step="cases",
    source="verse",
    case_column="scan_id",
    file_column=None,
    file_of="verse_etl.verse.vertebrae:quarantine_file",
    parent=("scan_id", "scans"),
    release_from_parent=True,
)
"""``vertebrae``: rows added by each scan's case (``verse_etl.verse.vertebrae``); a record names
the scan's mask or centroid file, whichever the check is about."""
