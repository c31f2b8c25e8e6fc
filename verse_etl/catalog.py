"""A DuckDB catalog over a build: one view per Parquet table, for ad-hoc SQL.

The views read the Parquet files in place (nothing is copied), so the catalog is always exactly
the build on disk. Works on a build fetched with ``dvc pull`` as well as on a local one.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from schemas import PARTITION_BY, SORT_KEYS, TABLES
from verse_etl.errors import InputError
from verse_etl.paths import table_dir, table_files_glob


def connect(out: Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """Open DuckDB with a view per table of the build at ``out``.

    Raises
    ------
    InputError
        If ``out`` holds no tables (not a build folder, or the build has not run).
    """
    found = [name for name in TABLES if table_dir(out, name).is_dir()]
    if not found:
        raise InputError(
            out,
            "no tables found (expected tables/<table>/source=*/release=*/*.parquet)",
            "run `dvc repro` (or `dvc pull`) first, or pass the build folder",
            check="catalog",
        )
    con = duckdb.connect(database)
    for name in found:
        con.execute(view_sql(out, name))
    return con


def view_sql(out: Path, name: str) -> str:
    """The DuckDB view of table ``name``: every partition, columns and rows in contract order."""
    files = table_files_glob(out.resolve(), name).replace("'", "''")
    columns = ", ".join(f'"{c}"' for c in TABLES[name].to_schema().columns)
    order = ", ".join(f'"{c}"' for c in SORT_KEYS[name])
    # Partition values are typed VARCHAR: never guessed from how they look.
    types = ", ".join(f"'{key}': VARCHAR" for key in PARTITION_BY)
    return (
        f"CREATE OR REPLACE VIEW {name} AS SELECT {columns} FROM read_parquet('{files}', "
        f"hive_partitioning = true, hive_types = {{{types}}}) ORDER BY {order}"
    )


def query(out: Path, sql: str) -> pa.Table:
    """Run ``sql`` against the catalog of ``out`` and return the result as an Arrow table.

    Raises
    ------
    InputError
        If the SQL fails (the message names the build folder and DuckDB's reason).
    """
    con = connect(out)
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as e:
        raise InputError(
            out,
            f"query failed ({e})",
            "check the SQL; the views are named after the tables (scans, vertebrae, ...)",
            check="query",
        ) from e
    finally:
        con.close()
