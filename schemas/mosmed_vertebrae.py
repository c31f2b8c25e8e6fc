"""Contract of ``mosmed_vertebrae.parquet``: one row per study, release, expert and vertebra.

Keypoints are kept as annotated (``row``, ``col``, ``k`` in InstanceNumber order), as source grid
indices (``row``, ``col``, ``slice``: position order), as store indices (``store_z``, ``store_y``,
``store_x``: the Zarr array, right way up) and in world RAS+ millimetres; heights, deformity ratios and the
Genant grade are derived from the world coordinates (``verse_etl.mosmed.measures``). Row checks: six
complete points, heights above zero, superior above inferior, anterior before posterior, every
point inside the series' volume, one vertebra per level and expert. Quality checks (the row stays,
a quarantine record names the levels, ``verse_etl.schemas.anatomy``): each expert's vertebrae in
cranio-caudal order without overlap, and no gap in their run of levels.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from verse_etl.schemas.anatomy import level_gap_findings, mosmed_order_findings, passes
from verse_etl.schemas.checks import PARTITION_NOTE
from verse_etl.schemas.table import Table

from verse_etl.levels import LEVEL_RULES, POINT_NAMES
from verse_etl.levels import MOSMED_LEVELS as LEVELS

LEVEL_SOURCES = ["annotation", *LEVEL_RULES]
ID_MATCHES = ["exact", "mapping", "folder"]


def _columns(suffix: str) -> list[str]:
    return [f"{name}_{suffix}" for name in POINT_NAMES]


class MosmedVertebraeTable(pa.DataFrameModel):
    """One row per MosMed study, release, expert and vertebra: keypoints, heights, grade."""

    folder: Series[str] = pa.Field(description="Study folder (current identifier).")
    series_uid: Series[str] = pa.Field(
        description="SeriesInstanceUID of the annotated series (current identifier), verbatim."
    )
    expert: Series[str] = pa.Field(
        str_matches=r"^expert\d+$", description="Annotating expert (expert0..expert6)."
    )
    vertebra_index: Series[int] = pa.Field(
        ge=0, description="Position in the expert's list, cranial to caudal."
    )
    level: Series[str] = pa.Field(
        nullable=True,
        isin=list(LEVELS),
        description="Vertebra level (C1..C7, T1..T12, L1..L5; v2's Th7 is T7) from the v2 label, "
        "or for v1 from the matching v2 vertebra; null where no labelled release gives it.",
    )
    level_source: Series[str] = pa.Field(
        nullable=True,
        isin=LEVEL_SOURCES,
        description="Where the level comes from: annotation (the v2 label itself), or for a v1 "
        "vertebra the rule that matched it to a labelled v2 vertebra, first that applies: "
        "v2_identical_keypoints (a v2 vertebra with the very same six keypoints), "
        "v2_same_reader (nearest vertebra of the same reader in v2, as paired in "
        "mosmed_expert_pairs by keypoints, not by key), v2_other_reader (nearest vertebra of "
        "another v2 reader); null without level.",
    )
    id_match: Series[str] = pa.Field(
        isin=ID_MATCHES,
        description="Identifiers that matched the study and series: exact (as in the file), "
        "mapping (older identifiers via mosmed.id_mapping), or folder (the study's files carry "
        "no UIDs: the one series of the folder without UIDs that holds every annotated slice).",
    )
    annotation_path: Series[str] = pa.Field(
        description="Source annotation file, relative to the MosMed source root."
    )
    store_path: Series[str] = pa.Field(
        description="Zarr store of the annotated series, relative to the build root."
    )
    series_rows: Series[int] = pa.Field(
        gt=0, description="Rows of the series (source axis 0; of the resampled grid if resampled)."
    )
    series_columns: Series[int] = pa.Field(
        gt=0, description="Columns of the series (source axis 1)."
    )
    series_slices: Series[int] = pa.Field(gt=0, description="Slices of the series (source axis 2).")
    ant_sup_row: Series[float] = pa.Field(
        description="Anterior superior endplate point: pixel row (array axis 0), as annotated."
    )
    ant_sup_col: Series[float] = pa.Field(
        description="Anterior superior endplate point: pixel column (array axis 1; the sagittal slice), "
        "as annotated."
    )
    ant_sup_k: Series[float] = pa.Field(
        description="Anterior superior endplate point: slice index in InstanceNumber order, 0-based, "
        "as annotated."
    )
    ant_sup_slice: Series[float] = pa.Field(
        description="Anterior superior endplate point: source frame slice index (axis 2 of series.affine: slices "
        "sorted by position, or the resampled grid's)."
    )
    ant_sup_store_z: Series[float] = pa.Field(
        description="Anterior superior endplate point: store frame, voxel index along the Zarr array's axis 0 (NGFF "
        "z, growing toward superior; series.store_affine maps it to RAS+ mm)."
    )
    ant_sup_store_y: Series[float] = pa.Field(
        description="Anterior superior endplate point: store frame, voxel index along the Zarr array's axis 1 (NGFF "
        "y, growing toward posterior; series.store_affine maps it to RAS+ mm)."
    )
    ant_sup_store_x: Series[float] = pa.Field(
        description="Anterior superior endplate point: store frame, voxel index along the Zarr array's axis 2 (NGFF "
        "x, growing toward the patient's left; series.store_affine maps it to RAS+ mm)."
    )
    ant_sup_x_mm: Series[float] = pa.Field(
        description="Anterior superior endplate point: world RAS+ x in mm (toward the patient's right)."
    )
    ant_sup_y_mm: Series[float] = pa.Field(
        description="Anterior superior endplate point: world RAS+ y in mm (anterior)."
    )
    ant_sup_z_mm: Series[float] = pa.Field(
        description="Anterior superior endplate point: world RAS+ z in mm (superior)."
    )
    ant_inf_row: Series[float] = pa.Field(
        description="Anterior inferior endplate point: pixel row (array axis 0), as annotated."
    )
    ant_inf_col: Series[float] = pa.Field(
        description="Anterior inferior endplate point: pixel column (array axis 1; the sagittal slice), "
        "as annotated."
    )
    ant_inf_k: Series[float] = pa.Field(
        description="Anterior inferior endplate point: slice index in InstanceNumber order, 0-based, "
        "as annotated."
    )
    ant_inf_slice: Series[float] = pa.Field(
        description="Anterior inferior endplate point: source frame slice index (axis 2 of series.affine: slices "
        "sorted by position, or the resampled grid's)."
    )
    ant_inf_store_z: Series[float] = pa.Field(
        description="Anterior inferior endplate point: store frame, voxel index along the Zarr array's axis 0 (NGFF "
        "z, growing toward superior; series.store_affine maps it to RAS+ mm)."
    )
    ant_inf_store_y: Series[float] = pa.Field(
        description="Anterior inferior endplate point: store frame, voxel index along the Zarr array's axis 1 (NGFF "
        "y, growing toward posterior; series.store_affine maps it to RAS+ mm)."
    )
    ant_inf_store_x: Series[float] = pa.Field(
        description="Anterior inferior endplate point: store frame, voxel index along the Zarr array's axis 2 (NGFF "
        "x, growing toward the patient's left; series.store_affine maps it to RAS+ mm)."
    )
    ant_inf_x_mm: Series[float] = pa.Field(
        description="Anterior inferior endplate point: world RAS+ x in mm (toward the patient's right)."
    )
    ant_inf_y_mm: Series[float] = pa.Field(
        description="Anterior inferior endplate point: world RAS+ y in mm (anterior)."
    )
    ant_inf_z_mm: Series[float] = pa.Field(
        description="Anterior inferior endplate point: world RAS+ z in mm (superior)."
    )
    mid_sup_row: Series[float] = pa.Field(
        description="Middle superior endplate point: pixel row (array axis 0), as annotated."
    )
    mid_sup_col: Series[float] = pa.Field(
        description="Middle superior endplate point: pixel column (array axis 1; the sagittal slice), "
        "as annotated."
    )
    mid_sup_k: Series[float] = pa.Field(
        description="Middle superior endplate point: slice index in InstanceNumber order, 0-based, "
        "as annotated."
    )
    mid_sup_slice: Series[float] = pa.Field(
        description="Middle superior endplate point: source frame slice index (axis 2 of series.affine: slices "
        "sorted by position, or the resampled grid's)."
    )
    mid_sup_store_z: Series[float] = pa.Field(
        description="Middle superior endplate point: store frame, voxel index along the Zarr array's axis 0 (NGFF "
        "z, growing toward superior; series.store_affine maps it to RAS+ mm)."
    )
    mid_sup_store_y: Series[float] = pa.Field(
        description="Middle superior endplate point: store frame, voxel index along the Zarr array's axis 1 (NGFF "
        "y, growing toward posterior; series.store_affine maps it to RAS+ mm)."
    )
    mid_sup_store_x: Series[float] = pa.Field(
        description="Middle superior endplate point: store frame, voxel index along the Zarr array's axis 2 (NGFF "
        "x, growing toward the patient's left; series.store_affine maps it to RAS+ mm)."
    )
    mid_sup_x_mm: Series[float] = pa.Field(
        description="Middle superior endplate point: world RAS+ x in mm (toward the patient's right)."
    )
    mid_sup_y_mm: Series[float] = pa.Field(
        description="Middle superior endplate point: world RAS+ y in mm (anterior)."
    )
    mid_sup_z_mm: Series[float] = pa.Field(
        description="Middle superior endplate point: world RAS+ z in mm (superior)."
    )
    mid_inf_row: Series[float] = pa.Field(
        description="Middle inferior endplate point: pixel row (array axis 0), as annotated."
    )
    mid_inf_col: Series[float] = pa.Field(
        description="Middle inferior endplate point: pixel column (array axis 1; the sagittal slice), "
        "as annotated."
    )
    mid_inf_k: Series[float] = pa.Field(
        description="Middle inferior endplate point: slice index in InstanceNumber order, 0-based, "
        "as annotated."
    )
    mid_inf_slice: Series[float] = pa.Field(
        description="Middle inferior endplate point: source frame slice index (axis 2 of series.affine: slices "
        "sorted by position, or the resampled grid's)."
    )
    mid_inf_store_z: Series[float] = pa.Field(
        description="Middle inferior endplate point: store frame, voxel index along the Zarr array's axis 0 (NGFF "
        "z, growing toward superior; series.store_affine maps it to RAS+ mm)."
    )
    mid_inf_store_y: Series[float] = pa.Field(
        description="Middle inferior endplate point: store frame, voxel index along the Zarr array's axis 1 (NGFF "
        "y, growing toward posterior; series.store_affine maps it to RAS+ mm)."
    )
    mid_inf_store_x: Series[float] = pa.Field(
        description="Middle inferior endplate point: store frame, voxel index along the Zarr array's axis 2 (NGFF "
        "x, growing toward the patient's left; series.store_affine maps it to RAS+ mm)."
    )
    mid_inf_x_mm: Series[float] = pa.Field(
        description="Middle inferior endplate point: world RAS+ x in mm (toward the patient's right)."
    )
    mid_inf_y_mm: Series[float] = pa.Field(
        description="Middle inferior endplate point: world RAS+ y in mm (anterior)."
    )
    mid_inf_z_mm: Series[float] = pa.Field(
        description="Middle inferior endplate point: world RAS+ z in mm (superior)."
    )
    post_sup_row: Series[float] = pa.Field(
        description="Posterior superior endplate point: pixel row (array axis 0), as annotated."
    )
    post_sup_col: Series[float] = pa.Field(
        description="Posterior superior endplate point: pixel column (array axis 1; the sagittal slice), "
        "as annotated."
    )
    post_sup_k: Series[float] = pa.Field(
        description="Posterior superior endplate point: slice index in InstanceNumber order, 0-based, "
        "as annotated."
    )
    post_sup_slice: Series[float] = pa.Field(
        description="Posterior superior endplate point: source frame slice index (axis 2 of series.affine: slices "
        "sorted by position, or the resampled grid's)."
    )
    post_sup_store_z: Series[float] = pa.Field(
        description="Posterior superior endplate point: store frame, voxel index along the Zarr array's axis 0 (NGFF "
        "z, growing toward superior; series.store_affine maps it to RAS+ mm)."
    )
    post_sup_store_y: Series[float] = pa.Field(
        description="Posterior superior endplate point: store frame, voxel index along the Zarr array's axis 1 (NGFF "
        "y, growing toward posterior; series.store_affine maps it to RAS+ mm)."
    )
    post_sup_store_x: Series[float] = pa.Field(
        description="Posterior superior endplate point: store frame, voxel index along the Zarr array's axis 2 (NGFF "
        "x, growing toward the patient's left; series.store_affine maps it to RAS+ mm)."
    )
    post_sup_x_mm: Series[float] = pa.Field(
        description="Posterior superior endplate point: world RAS+ x in mm (toward the patient's right)."
    )
    post_sup_y_mm: Series[float] = pa.Field(
        description="Posterior superior endplate point: world RAS+ y in mm (anterior)."
    )
    post_sup_z_mm: Series[float] = pa.Field(
        description="Posterior superior endplate point: world RAS+ z in mm (superior)."
    )
    post_inf_row: Series[float] = pa.Field(
        description="Posterior inferior endplate point: pixel row (array axis 0), as annotated."
    )
    post_inf_col: Series[float] = pa.Field(
        description="Posterior inferior endplate point: pixel column (array axis 1; the sagittal slice), "
        "as annotated."
    )
    post_inf_k: Series[float] = pa.Field(
        description="Posterior inferior endplate point: slice index in InstanceNumber order, 0-based, "
        "as annotated."
    )
    post_inf_slice: Series[float] = pa.Field(
        description="Posterior inferior endplate point: source frame slice index (axis 2 of series.affine: slices "
        "sorted by position, or the resampled grid's)."
    )
    post_inf_store_z: Series[float] = pa.Field(
        description="Posterior inferior endplate point: store frame, voxel index along the Zarr array's axis 0 (NGFF "
        "z, growing toward superior; series.store_affine maps it to RAS+ mm)."
    )
    post_inf_store_y: Series[float] = pa.Field(
        description="Posterior inferior endplate point: store frame, voxel index along the Zarr array's axis 1 (NGFF "
        "y, growing toward posterior; series.store_affine maps it to RAS+ mm)."
    )
    post_inf_store_x: Series[float] = pa.Field(
        description="Posterior inferior endplate point: store frame, voxel index along the Zarr array's axis 2 (NGFF "
        "x, growing toward the patient's left; series.store_affine maps it to RAS+ mm)."
    )
    post_inf_x_mm: Series[float] = pa.Field(
        description="Posterior inferior endplate point: world RAS+ x in mm (toward the patient's right)."
    )
    post_inf_y_mm: Series[float] = pa.Field(
        description="Posterior inferior endplate point: world RAS+ y in mm (anterior)."
    )
    post_inf_z_mm: Series[float] = pa.Field(
        description="Posterior inferior endplate point: world RAS+ z in mm (superior)."
    )
    height_ant_mm: Series[float] = pa.Field(
        gt=0, description="Anterior height |ant_inf - ant_sup| in mm (world coordinates)."
    )
    height_mid_mm: Series[float] = pa.Field(
        gt=0, description="Middle height |mid_inf - mid_sup| in mm."
    )
    height_post_mm: Series[float] = pa.Field(
        gt=0, description="Posterior height |post_inf - post_sup| in mm."
    )
    wedge_ratio: Series[float] = pa.Field(description="1 - height_ant / height_post.")
    biconcave_ratio: Series[float] = pa.Field(
        description="1 - height_mid / max(height_ant, height_post)."
    )
    deformity_ratio: Series[float] = pa.Field(
        ge=0, le=1, description="General deformity: 1 - min(heights) / max(heights)."
    )
    crush_ratio: Series[float] = pa.Field(
        nullable=True,
        description="1 - height_post / mean(height_post of the adjacent vertebrae of the same "
        "expert: by level where known, else by list order); null without a neighbour.",
    )
    genant_grade: Series[int] = pa.Field(
        isin=[0, 1, 2, 3],
        description="Genant grade 0..3 of the largest ratio named in mosmed.genant.ratios, with "
        "the thresholds and bin convention of mosmed.genant.",
    )

    source: Series[str] = pa.Field(isin=["mosmed"], description="Source dataset." + PARTITION_NOTE)
    release: Series[str] = pa.Field(
        isin=["v1", "v2"],
        description="Annotation release: v1 (Pisov 2020) or v2 (labelled, Zakharov 2023)."
        + PARTITION_NOTE,
    )

    class Config:
        strict = True
        coerce = True
        unique = ["folder", "release", "expert", "vertebra_index"]
        description = (
            "MosMed vertebral-fracture keypoints per expert and vertebra, in voxel and world "
            "coordinates, with heights, deformity ratios and Genant grade."
        )

    @pa.dataframe_check(name="superior_above_inferior")
    def _sup_inf(cls, df: pd.DataFrame) -> pd.Series:
        # In patient (RAS+) coordinates superior is +z, whatever the slice order on disk.
        return (
            (df["ant_sup_z_mm"] > df["ant_inf_z_mm"])
            & (df["mid_sup_z_mm"] > df["mid_inf_z_mm"])
            & (df["post_sup_z_mm"] > df["post_inf_z_mm"])
        )

    @pa.dataframe_check(name="anterior_before_posterior")
    def _ant_post(cls, df: pd.DataFrame) -> pd.Series:
        # RAS+ y grows toward anterior: the anterior wall lies in front of the posterior one.
        return (df["ant_sup_y_mm"] + df["ant_inf_y_mm"]) > (
            df["post_sup_y_mm"] + df["post_inf_y_mm"]
        )

    @pa.dataframe_check(name="points_inside_volume")
    def _inside(cls, df: pd.DataFrame) -> pd.Series:
        # Voxel centres are at whole indices, so the volume spans -0.5 .. n - 0.5 on each axis.
        inside = pd.Series(True, index=df.index)
        for suffix, size in (
            ("row", "series_rows"),
            ("col", "series_columns"),
            ("slice", "series_slices"),
        ):
            for column in _columns(suffix):
                inside &= (df[column] >= -0.5) & (df[column] <= df[size] - 0.5)
        return inside

    @classmethod
    def findings(cls, check: str, df: pd.DataFrame) -> pd.Series | None:
        """What a quality check found in each row (None where nothing), naming the levels."""
        if check == "vertebra_order":
            return mosmed_order_findings(df)
        if check == "level_sequence_gap":
            return level_gap_findings(df, ["folder", "release", "expert"], who="expert")
        return None

    @pa.dataframe_check(
        name="vertebra_order",
        raise_warning=True,
        error="one expert's vertebrae must run from cranial to caudal without overlapping "
        "(expected each inferior endplate point above the next vertebra's superior one); "
        "check the levels and points of that expert",
    )
    def _order(cls, df: pd.DataFrame) -> pd.Series:
        return passes(mosmed_order_findings(df))

    @pa.dataframe_check(
        name="level_sequence_gap",
        raise_warning=True,
        error="one expert's levels must form an unbroken run (expected every level between "
        "the first and the last); a vertebra was skipped or mislabelled",
    )
    def _gap(cls, df: pd.DataFrame) -> pd.Series:
        return passes(level_gap_findings(df, ["folder", "release", "expert"], who="expert"))

    @pa.dataframe_check(name="one_vertebra_per_level")
    def _unique_level(cls, df: pd.DataFrame) -> pd.Series:
        keys = ["folder", "release", "expert", "level"]
        labelled = df["level"].notna()
        repeated = df[labelled].duplicated(subset=keys, keep=False)
        return ~repeated.reindex(df.index, fill_value=False)


MOSMED_VERTEBRAE = Table(
    name="mosmed_vertebrae",
    model=MosmedVertebraeTable,
    sort_keys=("folder", "release", "expert", "vertebra_index"),
    step="cases",
    source="mosmed",
    case_column="folder",
    file_column="annotation_path",
    parent=("series_uid", "series"),
)
"""``mosmed_vertebrae``: keypoint rows added by each study's case (``verse_etl.mosmed.keypoints``)."""
