"""Contract of ``mosmed_vertebrae.parquet``: one row per study, expert and annotated vertebra."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


class MosmedVertebraeTable(pa.DataFrameModel):
    """One row per MosMed study, expert and vertebra, with its six keypoints in voxel units."""

    folder: Series[str] = pa.Field(description="Study folder (annotation file stem).")
    series_uid: Series[str] = pa.Field(
        description="SeriesInstanceUID the keypoints refer to, verbatim."
    )
    release: Series[str] = pa.Field(
        isin=["v1", "v2"],
        description="Annotation release: v1 (Pisov 2020) or v2 (labelled, Zakharov 2023).",
    )
    expert: Series[str] = pa.Field(
        str_matches=r"^expert\d+$", description="Annotating expert (expert0..expert6)."
    )
    vertebra_index: Series[int] = pa.Field(
        ge=0, description="Position in the expert's list, cranial to caudal."
    )
    level: Series[str] = pa.Field(
        nullable=True,
        description="Vertebra level (e.g. Th7) where a labelled release gives it, else null.",
    )
    annotation_path: Series[str] = pa.Field(
        description="Source annotation file, relative to the MosMed source root."
    )
    store_path: Series[str] = pa.Field(
        nullable=True, description="Zarr store of the annotated series, relative to the build root."
    )
    ant_sup_row: Series[float] = pa.Field(
        description="Anterior superior endplate point: pixel row (axis 0 of the DICOM pixel array), as annotated."
    )
    ant_sup_col: Series[float] = pa.Field(
        description="Anterior superior endplate point: pixel column (the sagittal slice), as annotated."
    )
    ant_sup_k: Series[float] = pa.Field(
        description="Anterior superior endplate point: slice index in InstanceNumber order, 0-based, as annotated."
    )
    ant_inf_row: Series[float] = pa.Field(
        description="Anterior inferior endplate point: pixel row (axis 0 of the DICOM pixel array), as annotated."
    )
    ant_inf_col: Series[float] = pa.Field(
        description="Anterior inferior endplate point: pixel column (the sagittal slice), as annotated."
    )
    ant_inf_k: Series[float] = pa.Field(
        description="Anterior inferior endplate point: slice index in InstanceNumber order, 0-based, as annotated."
    )
    mid_sup_row: Series[float] = pa.Field(
        description="Middle superior endplate point: pixel row (axis 0 of the DICOM pixel array), as annotated."
    )
    mid_sup_col: Series[float] = pa.Field(
        description="Middle superior endplate point: pixel column (the sagittal slice), as annotated."
    )
    mid_sup_k: Series[float] = pa.Field(
        description="Middle superior endplate point: slice index in InstanceNumber order, 0-based, as annotated."
    )
    mid_inf_row: Series[float] = pa.Field(
        description="Middle inferior endplate point: pixel row (axis 0 of the DICOM pixel array), as annotated."
    )
    mid_inf_col: Series[float] = pa.Field(
        description="Middle inferior endplate point: pixel column (the sagittal slice), as annotated."
    )
    mid_inf_k: Series[float] = pa.Field(
        description="Middle inferior endplate point: slice index in InstanceNumber order, 0-based, as annotated."
    )
    post_sup_row: Series[float] = pa.Field(
        description="Posterior superior endplate point: pixel row (axis 0 of the DICOM pixel array), as annotated."
    )
    post_sup_col: Series[float] = pa.Field(
        description="Posterior superior endplate point: pixel column (the sagittal slice), as annotated."
    )
    post_sup_k: Series[float] = pa.Field(
        description="Posterior superior endplate point: slice index in InstanceNumber order, 0-based, as annotated."
    )
    post_inf_row: Series[float] = pa.Field(
        description="Posterior inferior endplate point: pixel row (axis 0 of the DICOM pixel array), as annotated."
    )
    post_inf_col: Series[float] = pa.Field(
        description="Posterior inferior endplate point: pixel column (the sagittal slice), as annotated."
    )
    post_inf_k: Series[float] = pa.Field(
        description="Posterior inferior endplate point: slice index in InstanceNumber order, 0-based, as annotated."
    )

    class Config:
        strict = True
        coerce = True
        unique = ["folder", "release", "expert", "vertebra_index"]
        description = "MosMed vertebral-fracture keypoints: six points per expert and vertebra."

    @pa.dataframe_check(name="superior_above_inferior")
    def _sup_inf(cls, df: pd.DataFrame) -> pd.Series:
        # k grows cranial -> caudal (InstanceNumber runs head to feet), so superior has smaller k.
        return (
            (df["ant_sup_k"] < df["ant_inf_k"])
            & (df["mid_sup_k"] < df["mid_inf_k"])
            & (df["post_sup_k"] < df["post_inf_k"])
        )

    @pa.dataframe_check(name="anterior_before_posterior")
    def _ant_post(cls, df: pd.DataFrame) -> pd.Series:
        # Supine patient, standard axial orientation: the row index grows toward posterior.
        return (df["ant_sup_row"] + df["ant_inf_row"]) < (df["post_sup_row"] + df["post_inf_row"])
