"""Checks shared by several table contracts."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
from verse_etl.schemas.pandera_typing import pandas_typing_only

# Every contract imports this module before its model builds a schema: pandera's typing then
# skips importing dask.dataframe (see verse_etl.schemas.pandera_typing).
pandas_typing_only()

ORIENTATION_LETTERS = set("LRAPSI")

MAX_VOXEL_SPACING_MM = 50.0
"""The largest voxel size a CT row may carry. Scanners make 0.2-10 mm voxels; more is a damaged
header (a NIfTI without sform or qform whose pixdim says 1e12 mm built as a valid scan), and the
row goes to quarantine instead of into the table."""


def is_affine(value: object) -> bool:
    """A row-major 4x4 affine flattened to 16 finite floats with last row 0 0 0 1."""
    if not isinstance(value, Iterable):
        return False
    try:
        items = [float(v) for v in value]
    except (TypeError, ValueError):
        return False
    return (
        len(items) == 16
        and all(math.isfinite(v) for v in items)
        and items[12:] == [0.0, 0.0, 0.0, 1.0]
    )


def _elementwise(series: pd.Series, check: Callable[[Any], object]) -> pd.Series:
    # Not Series.map: on pandas' Arrow-backed str dtype it returns str-typed results.
    return pd.Series([bool(check(v)) for v in series], index=series.index, dtype=bool)


def affine_column(series: pd.Series) -> pd.Series:
    """Element-wise :func:`is_affine`."""
    return _elementwise(series, is_affine)


def orientation_column(series: pd.Series) -> pd.Series:
    """Three distinct anatomical axis codes, e.g. ``PIR``."""
    return _elementwise(
        series,
        lambda s: (
            isinstance(s, str)
            and len(s) == 3
            and set(s) <= ORIENTATION_LETTERS
            and len({c.replace("R", "L").replace("A", "P").replace("I", "S") for c in s}) == 3
        ),
    )


PARTITION_NOTE = (
    " Hive partition key: the value is the folder name (source=..., release=...), not a column "
    "of the Parquet files; readers with hive partitioning (DuckDB, polars, pyarrow.dataset, "
    "pandas, Spark) return it as a column."
)

VERSE_RELEASES = ["verse19", "verse20"]
MOSMED_RELEASES = ["ctlungca500", "v1", "v2"]
"""MosMed: ctlungca500 for the CT studies themselves, v1/v2 for the annotation releases."""
