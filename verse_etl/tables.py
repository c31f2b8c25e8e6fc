"""Case rows -> validated tables -> Parquet files (written atomically, byte-stable).

Arrow types come from each table's contract in ``schemas/`` (plain types only, so DuckDB, pandas,
polars and Spark read them alike) and each column's description is written into the Parquet field
metadata.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.parquet as pq

from verse_etl.records import CaseResult, QuarantineRecord

_ARROW_TYPES: dict[str, pa_arrow.DataType] = {
    "str": pa_arrow.string(),
    "string[pyarrow]": pa_arrow.string(),  # pandas >= 3 default string dtype
    "int64": pa_arrow.int64(),
    "Int64": pa_arrow.int64(),  # nullable integers (pandas' masked dtype)
    "float64": pa_arrow.float64(),
    "bool": pa_arrow.bool_(),
    # Object columns hold lists of floats (affines); Arrow stores them as list<double>.
    "object": pa_arrow.list_(pa_arrow.float64()),
}


def arrow_schema(model: type[pa.DataFrameModel]) -> pa_arrow.Schema:
    """Arrow schema of a table contract, with each column's description as field metadata."""
    schema = model.to_schema()
    fields = []
    for name, column in schema.columns.items():
        arrow_type = _ARROW_TYPES[str(column.dtype)]
        metadata = {b"description": (column.description or "").encode()}
        fields.append(pa_arrow.field(name, arrow_type, nullable=column.nullable, metadata=metadata))
    table_description = (getattr(model.Config, "description", "") or "").encode()
    return pa_arrow.schema(fields, metadata={b"description": table_description})


def collect_rows(results: Iterable[CaseResult], table: str) -> list[dict[str, Any]]:
    """All rows for ``table`` from the case results, in case order."""
    return [row for result in results for row in result.rows.get(table, [])]


def frame(
    rows: list[dict[str, Any]], model: type[pa.DataFrameModel], sort_keys: tuple[str, ...]
) -> pd.DataFrame:
    """A DataFrame with exactly the contract's columns (also when there are no rows), sorted."""
    columns = list(model.to_schema().columns)
    df = pd.DataFrame(rows, columns=columns)
    if not df.empty:
        df = df.sort_values(list(sort_keys), kind="stable").reset_index(drop=True)
    return df


def quarantine_frame(records: Iterable[QuarantineRecord]) -> list[dict[str, Any]]:
    """Quarantine records as rows of the quarantine table."""
    return [record.__dict__.copy() for record in records]


def write_parquet(df: pd.DataFrame, path: Path, model: type[pa.DataFrameModel]) -> None:
    """Write ``df`` to ``path`` with the contract's Arrow schema, through a temporary file.

    Raises
    ------
    pyarrow.ArrowInvalid
        If a value does not fit its contract type (a pipeline bug: validation runs first).
    """
    schema = arrow_schema(model)
    table = pa_arrow.Table.from_pandas(df, schema=schema, preserve_index=False)
    # from_pandas adds pandas metadata (index, versions); keep only the contract's.
    table = table.replace_schema_metadata(schema.metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd", write_statistics=True)
    os.replace(tmp, path)
