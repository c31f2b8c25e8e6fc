"""Contract of ``mosmed_consensus.parquet``: one row per study, release and vertebra across experts.

Built from the validated ``mosmed_vertebrae`` rows (``verse_etl.mosmed.consensus``): the experts'
readings of one vertebra are grouped by level where every reading has one, else by position
(centres closer than half a vertebra height), and compared.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from verse_etl.schemas.checks import PARTITION_NOTE
from verse_etl.schemas.table import Table

from verse_etl.levels import MOSMED_LEVELS as LEVELS


class MosmedConsensusTable(pa.DataFrameModel):
    """One row per MosMed study, annotation release and vertebra: agreement between experts."""

    folder: Series[str] = pa.Field(description="Study folder (joins mosmed_vertebrae.folder).")
    series_uid: Series[str] = pa.Field(description="SeriesInstanceUID of the annotated series.")
    vertebra: Series[int] = pa.Field(
        ge=0, description="Vertebra number within the study and release, cranial first."
    )
    level: Series[str] = pa.Field(
        nullable=True,
        isin=list(LEVELS),
        description="Level the experts' readings agree on; null if unknown or disputed.",
    )
    grouped_by: Series[str] = pa.Field(
        isin=["level", "position"],
        description="How readings were matched: by their level, or by position (no levels).",
    )
    n_experts: Series[int] = pa.Field(gt=0, description="Experts who annotated this vertebra.")
    experts: Series[str] = pa.Field(description="Those experts, comma-separated, sorted.")
    mean_keypoint_distance_mm: Series[float] = pa.Field(
        nullable=True,
        ge=0,
        description="Mean over expert pairs of the mean distance between corresponding keypoints "
        "(mm); null with one expert.",
    )
    max_keypoint_distance_mm: Series[float] = pa.Field(
        nullable=True,
        ge=0,
        description="Largest distance between corresponding keypoints of two experts (mm).",
    )
    height_ant_mm: Series[float] = pa.Field(gt=0, description="Mean anterior height (mm).")
    height_mid_mm: Series[float] = pa.Field(gt=0, description="Mean middle height (mm).")
    height_post_mm: Series[float] = pa.Field(gt=0, description="Mean posterior height (mm).")
    deformity_ratio: Series[float] = pa.Field(
        ge=0, le=1, description="Mean general deformity ratio of the experts."
    )
    genant_grade: Series[int] = pa.Field(
        isin=[0, 1, 2, 3],
        description="Consensus Genant grade: the most frequent expert grade (ties: the higher).",
    )
    genant_grade_min: Series[int] = pa.Field(isin=[0, 1, 2, 3], description="Lowest expert grade.")
    genant_grade_max: Series[int] = pa.Field(isin=[0, 1, 2, 3], description="Highest expert grade.")
    grade_agreement: Series[float] = pa.Field(
        gt=0, le=1, description="Share of the experts who gave the consensus grade."
    )

    source: Series[str] = pa.Field(isin=["mosmed"], description="Source dataset." + PARTITION_NOTE)
    release: Series[str] = pa.Field(
        isin=["v1", "v2"], description="Annotation release." + PARTITION_NOTE
    )

    class Config:
        strict = True
        coerce = True
        unique = ["folder", "release", "vertebra"]
        description = (
            "MosMed vertebrae across experts: matched readings, keypoint distances, mean heights "
            "and grade agreement."
        )

    @pa.dataframe_check(name="grade_within_range")
    def _grade_range(cls, df: pd.DataFrame) -> pd.Series:
        return (df["genant_grade_min"] <= df["genant_grade"]) & (
            df["genant_grade"] <= df["genant_grade_max"]
        )


MOSMED_CONSENSUS = Table(
    name="mosmed_consensus",
    model=MosmedConsensusTable,
    sort_keys=("folder", "release", "vertebra"),
    step="derived",
    source="mosmed",
    case_column="folder",
    file_column="folder",
    derived_from="mosmed_vertebrae",
    derive="verse_etl.mosmed.consensus:consensus_rows",
)
"""``mosmed_consensus``: computed from the validated ``mosmed_vertebrae`` rows."""
