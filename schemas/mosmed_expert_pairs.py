"""Contract of ``mosmed_expert_pairs.parquet``: which v2 reader is which v1 reader, per study.

The readers were renumbered between the two annotation releases, so the keys say nothing about
who read what. Every v1 expert of a study is compared with every v2 expert of the same study by
their keypoints (``verse_etl.mosmed.expert_matching``); a pair that repeats vertebrae with identical
keypoints is one reader in both releases (``same_reader``), and the level transfer of
``mosmed_vertebrae`` (``level_source = v2_same_reader``) uses exactly these pairs.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from verse_etl.schemas.checks import PARTITION_NOTE
from verse_etl.schemas.table import Table


class MosmedExpertPairsTable(pa.DataFrameModel):
    """One row per MosMed study, v1 expert and v2 expert: agreement of their keypoints."""

    folder: Series[str] = pa.Field(description="Study folder (joins mosmed_vertebrae.folder).")
    series_uid: Series[str] = pa.Field(
        description="SeriesInstanceUID of the annotated series both releases refer to."
    )
    expert_v1: Series[str] = pa.Field(
        str_matches=r"^expert\d+$",
        description="Expert key in the v1 file (joins mosmed_vertebrae.expert where release = v1).",
    )
    expert_v2: Series[str] = pa.Field(
        str_matches=r"^expert\d+$",
        description="Expert key in the v2 file (joins mosmed_vertebrae.expert where release = v2).",
    )
    n_vertebrae_v1: Series[int] = pa.Field(gt=0, description="Vertebrae the v1 expert read.")
    n_vertebrae_v2: Series[int] = pa.Field(gt=0, description="Vertebrae the v2 expert read.")
    n_identical: Series[int] = pa.Field(
        ge=0,
        description="v1 vertebrae whose six keypoints ([row, col, k] as annotated) the v2 expert "
        "repeats exactly: the same reading carried over to the labelled release.",
    )
    n_matched: Series[int] = pa.Field(
        ge=0,
        description="v1 vertebrae with a vertebra of the v2 expert whose centre is closer than "
        "half the vertebra's height (the same vertebra, re-read or not).",
    )
    mean_keypoint_distance_mm: Series[float] = pa.Field(
        nullable=True,
        ge=0,
        description="Mean distance (world mm) between corresponding keypoints of the matched "
        "vertebrae; 0 for a pure copy; null without a matched vertebra.",
    )
    same_reader: Series[bool] = pa.Field(
        description="The two keys are one reader: the pair with the most identical vertebrae "
        "(at least one), each expert in at most one such pair. Derived from the keypoints, never "
        "from the keys (v1 expert2 is v2 expert3 in real files).",
    )
    annotation_path_v1: Series[str] = pa.Field(
        description="v1 annotation file, relative to the MosMed source root."
    )
    annotation_path_v2: Series[str] = pa.Field(
        description="v2 annotation file, relative to the MosMed source root."
    )

    source: Series[str] = pa.Field(isin=["mosmed"], description="Source dataset." + PARTITION_NOTE)
    release: Series[str] = pa.Field(
        isin=["v2"],
        description="v2: the release whose readers are matched to v1's." + PARTITION_NOTE,
    )

    class Config:
        strict = True
        coerce = True
        unique = ["folder", "expert_v1", "expert_v2"]
        description = (
            "MosMed v1 <-> v2 reader correspondence per study, derived from identical keypoints, "
            "with the agreement of every v1/v2 expert pair."
        )

    @pa.dataframe_check(name="counts_within_readings")
    def _counts(cls, df: pd.DataFrame) -> pd.Series:
        return (df["n_identical"] <= df["n_matched"]) & (df["n_matched"] <= df["n_vertebrae_v1"])

    @pa.dataframe_check(name="one_reader_per_expert")
    def _one_reader(cls, df: pd.DataFrame) -> pd.Series:
        same = df[df["same_reader"].astype(bool)]
        repeated = same.duplicated(["folder", "expert_v1"], keep=False) | same.duplicated(
            ["folder", "expert_v2"], keep=False
        )
        return ~repeated.reindex(df.index, fill_value=False)


MOSMED_EXPERT_PAIRS = Table(
    name="mosmed_expert_pairs",
    model=MosmedExpertPairsTable,
    sort_keys=("folder", "expert_v1", "expert_v2"),
    step="cases",
    source="mosmed",
    case_column="folder",
    file_column="annotation_path_v1",
    release="v2",
    parent=("series_uid", "series"),
)
"""``mosmed_expert_pairs``: added by each study's case (``verse_etl.mosmed.keypoints``)."""
