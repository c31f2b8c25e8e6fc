"""A DuckDB catalog over a build: one view per Parquet table, for ad-hoc SQL.

The views read the Parquet files in place (nothing is copied), so the catalog is always exactly
the build on disk. Works on a build fetched with ``dvc pull`` as well as on a local one.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from schemas import TABLES
from verse_etl.errors import InputError
from verse_etl.paths import table_path


def connect(out: Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """Open DuckDB with a view per table of the build at ``out``.

    Raises
    ------
    InputError
        If ``out`` holds no tables (not a build folder, or the build has not run).
    """
    found = {name: table_path(out, name) for name in TABLES if table_path(out, name).exists()}
    if not found:
        raise InputError(
            out,
            "no tables found (expected tables/*.parquet)",
            "run `dvc repro` (or `dvc pull`) first, or pass the build folder",
            check="catalog",
        )
    con = duckdb.connect(database)
    for name, path in found.items():
        literal = str(path.resolve()).replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{literal}')")
    return con


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
