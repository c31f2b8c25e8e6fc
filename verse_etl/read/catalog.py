"""A DuckDB catalog over a build: one view per Parquet table, for ad-hoc SQL.

The views read the Parquet files in place (nothing is copied), so the catalog is always exactly
the build on disk. Works on a build fetched with ``dvc pull``, on a local one, and on one
published to an fsspec URL (``s3://bucket/prefix``: DuckDB reads it through fsspec).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from verse_etl.errors import InputError
from verse_etl.paths import TABLES_DIR, table_dir
from verse_etl.schemas.layout import PARTITION_BY, SORT_KEYS, TABLE_NAMES
from verse_etl.targets import Target, is_url

if TYPE_CHECKING:
    import duckdb


def connect(
    out: Path | str, database: str = ":memory:", comments: bool = True
) -> duckdb.DuckDBPyConnection:
    """Open DuckDB with a view per table of the build at ``out`` (a folder or an fsspec URL).

    ``comments`` gives the views and their columns the contracts' descriptions; without them
    the contracts (and pandas) are not imported, for a one-off query that answers at once.

    Raises
    ------
    InputError
        If ``out`` holds no tables (not a build folder, or the build has not run).
    """
    import duckdb

    con = duckdb.connect(database)
    if is_url(out):
        target = Target(str(out))
        con.register_filesystem(target.fs)
        # The generation the pointer names, read as it is now: a build published meanwhile
        # does not mix into this catalog.
        published = target.published_root()
        found = [
            name
            for name in TABLE_NAMES
            if target.exists(posixpath.join(published, TABLES_DIR, name))
        ]
        base = posixpath.join(str(out).rstrip("/"), published).rstrip("/")
    else:
        found = [name for name in TABLE_NAMES if table_dir(Path(out), name).is_dir()]
        base = str(Path(out).resolve())
    if not found:
        con.close()
        raise InputError(
            out,
            "no tables found (expected tables/<table>/source=*/release=*/*.parquet)",
            "run `dvc repro` (or `dvc pull`) first, or pass the build folder",
            check="catalog",
        )
    for name in found:
        con.execute(view_sql(base, name))
        if comments:
            con.execute(comment_sql(name))
    return con


def view_sql(base: str, name: str) -> str:
    """The DuckDB view of table ``name`` of the build at ``base`` (an absolute path or a URL):
    every partition, columns and rows in contract order.

    The files hold the contract's columns but the partition keys, which every contract declares
    last and DuckDB appends in path order: ``*`` is contract order without importing the
    contracts (and pandas), which keeps ``verse-etl query`` quick."""
    files = f"{base}/{TABLES_DIR}/{name}/source=*/release=*/*.parquet".replace("'", "''")
    order = ", ".join(f'"{c}"' for c in SORT_KEYS[name])
    # Partition values are typed VARCHAR: never guessed from how they look.
    types = ", ".join(f"'{key}': VARCHAR" for key in PARTITION_BY)
    return (
        f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{files}', "
        f"hive_partitioning = true, hive_types = {{{types}}}) ORDER BY {order}"
    )


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def comment_sql(name: str) -> str:
    """``COMMENT ON`` statements giving view ``name`` and each of its columns the description of
    its contract, so that ``duckdb_views()``, ``duckdb_columns()`` and SQL clients show them.

    Examples
    --------
    >>> comment_sql("quarantine").splitlines()[0]
    "COMMENT ON VIEW quarantine IS 'Rejected and flagged records with file, check and reason.';"
    """
    from verse_etl.schemas import TABLES

    model = TABLES[name]
    statements = [
        f"COMMENT ON VIEW {name} IS {_sql_string(getattr(model.Config, 'description', ''))};"
    ]
    for column, spec in model.to_schema().columns.items():
        text = _sql_string(spec.description or "")
        statements.append(f'COMMENT ON COLUMN {name}."{column}" IS {text};')
    return "\n".join(statements)


def query(out: Path | str, sql: str, comments: bool = True) -> pa.Table:
    """Run ``sql`` against the catalog of ``out`` and return the result as an Arrow table
    (``comments``: see :func:`connect`).

    Raises
    ------
    InputError
        If the SQL fails (the message names the build folder and DuckDB's reason).
    """
    import duckdb

    con = connect(out, comments=comments)
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
