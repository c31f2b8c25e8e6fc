"""Case rows -> validated tables -> Parquet files (written atomically, byte-stable).

Arrow types come from each table's contract in ``schemas/`` (plain types only, so DuckDB, pandas,
polars and Spark read them alike) and each column's description is written into the Parquet field
metadata.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from verse_etl.cases.records import CaseResult, QuarantineRecord
from verse_etl.io.atomic import new_folder
from verse_etl.paths import partition_path, table_dir
from verse_etl.schemas import PARTITION_BY, SORT_KEYS, TABLES
from verse_etl.targets import read_pointer

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


QUARANTINE_COLUMNS: dict[str, str] = {"table": "table_name", "check": "check_name"}
"""Quarantine record fields whose table column has another name: ``table`` and ``check`` are
reserved words in SQL (``GROUP BY check`` would not parse), so the columns carry a suffix."""


def quarantine_frame(records: Iterable[QuarantineRecord]) -> list[dict[str, Any]]:
    """Quarantine records as rows of the quarantine table (columns of ``schemas/quarantine.py``)."""
    return [
        {QUARANTINE_COLUMNS.get(k, k): v for k, v in record.__dict__.items()} for record in records
    ]


def file_schema(model: type[pa.DataFrameModel]) -> pa_arrow.Schema:
    """Arrow schema of the Parquet files of a table: the contract's without the partition keys."""
    schema = arrow_schema(model)
    for key in PARTITION_BY:
        schema = schema.remove(schema.get_field_index(key))
    return schema


def _empty_partition(model: type[pa.DataFrameModel]) -> tuple[str, ...]:
    # An empty table still gets one (empty) file, so that every reader sees its columns; it goes
    # to the first partition the contract allows.
    columns = model.to_schema().columns
    return tuple(
        str(columns[key].checks[0].statistics["allowed_values"][0]) for key in PARTITION_BY
    )


def write_table(df: pd.DataFrame, path: Path, model: type[pa.DataFrameModel]) -> list[Path]:
    """Write ``df`` as the hive-partitioned table folder ``path``, replacing it as a whole.

    One file per (source, release) partition, written into a temporary folder beside ``path``
    that is then renamed into place, so readers never see a mix of two builds. Returns the files.

    Raises
    ------
    pyarrow.ArrowInvalid
        If a value does not fit its contract type (a pipeline bug: validation runs first).
    """
    schema = file_schema(model)
    keys = list(PARTITION_BY)
    tmp = new_folder(path.with_name(f".{path.name}.tmp-{os.getpid()}"))
    if df.empty:
        parts = [(_empty_partition(model), df)]
    else:
        parts = [
            (tuple(str(v) for v in values), part)
            for values, part in df.groupby(keys, sort=True, dropna=False)
        ]
    files = []
    for (source, release), part in parts:
        table = pa_arrow.Table.from_pandas(
            part.drop(columns=keys), schema=schema, preserve_index=False
        )
        # from_pandas adds pandas metadata (index, versions); keep only the contract's.
        table = table.replace_schema_metadata(schema.metadata)
        file = partition_path(tmp, source, release)
        file.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, file, compression="zstd", write_statistics=True)
        files.append(path / file.relative_to(tmp))
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return files


def read_table(
    out: Path | str,
    name: str,
    columns: list[str] | None = None,
    filesystem: fsspec.AbstractFileSystem | None = None,
) -> pa_arrow.Table:
    """Table ``name`` of the build at ``out``, every partition, in contract order and row order.

    The partition keys come back as plain string columns and each column keeps its description.
    ``filesystem`` reads a build elsewhere (``dvc.api.DVCFileSystem`` at a git revision, s3); on
    an object store the generation the build's pointer names (:func:`verse_etl.targets.read_pointer`).

    Raises
    ------
    FileNotFoundError
        If the build has no such table.
    """
    model = TABLES[name]
    schema = arrow_schema(model)
    if filesystem is not None:
        out = posixpath.join(str(out), read_pointer(filesystem, str(out))).rstrip("/")
    folder = table_dir(Path(out), name).as_posix()
    if filesystem is None and not Path(folder).is_dir():
        raise FileNotFoundError(f"{folder}: table not found")
    partitioning = ds.partitioning(
        pa_arrow.schema([(key, pa_arrow.string()) for key in PARTITION_BY]), flavor="hive"
    )
    dataset = ds.dataset(folder, format="parquet", partitioning=partitioning, filesystem=filesystem)
    table = dataset.to_table()
    table = table.select(schema.names).cast(schema)
    table = table.sort_by([(key, "ascending") for key in SORT_KEYS[name]])
    if columns is not None:
        table = table.select(columns)
    return table


_NULLABLE = {
    pa_arrow.int64(): pd.Int64Dtype(),
    pa_arrow.float64(): pd.Float64Dtype(),
    pa_arrow.bool_(): pd.BooleanDtype(),
    pa_arrow.string(): pd.StringDtype(),
}


def read_frame(
    out: Path | str, name: str, filesystem: fsspec.AbstractFileSystem | None = None
) -> pd.DataFrame:
    """:func:`read_table` as a DataFrame with nullable dtypes.

    With numpy dtypes an int64 column turns float as soon as one row holds a null, so two builds
    of the same data would not compare equal row by row.
    """
    return read_table(out, name, filesystem=filesystem).to_pandas(types_mapper=_NULLABLE.get)
