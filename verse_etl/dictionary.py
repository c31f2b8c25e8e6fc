"""The data dictionary: Markdown generated from the table contracts, so it cannot drift.

``verse-etl dictionary`` writes ``docs/data-dictionary.md``; a test fails when the committed file
differs from what the contracts generate.
"""

from __future__ import annotations

import pandera.pandas as pa

from verse_etl.tables import arrow_schema

HEADER = (
    "# verse-etl data dictionary\n\n"
    "Generated from the contracts in `schemas/` by `verse-etl dictionary`; do not edit by hand.\n"
    "\nEach table is a folder of Parquet files, hive-partitioned by source and release:\n"
    "`tables/<table>/source=<source>/release=<release>/part-0.parquet`. The partition keys\n"
    "`source` and `release` are columns of every table; their values are in the folder names.\n"
    "Read a table with hive partitioning on, e.g. DuckDB\n"
    "`read_parquet('tables/scans/*/*/*.parquet', hive_partitioning = true)`, polars\n"
    "`pl.read_parquet('tables/scans/**/*.parquet', hive_partitioning=True)`, pandas\n"
    "`pd.read_parquet('tables/scans')`, or `pyarrow.dataset.dataset('tables/scans',\n"
    "partitioning='hive')`; `verse-etl query` and `verse_etl.dataset.Dataset` do it for you.\n"
)


def _checks(column: pa.Column) -> str:
    names = []
    for check in column.checks:
        stats = {k: v for k, v in (check.statistics or {}).items() if v is not None}
        if stats:
            shown = ", ".join(f"{k}={v}" for k, v in stats.items())
            names.append(f"{check.name}({shown})")
        else:
            names.append(str(check.name))
    if column.unique:
        names.append("unique")
    return "; ".join(names).replace("|", "\\|")


def render_dictionary(tables: dict[str, type[pa.DataFrameModel]]) -> str:
    """Markdown describing every table: its purpose, columns, Arrow types, nullability, checks."""
    parts = [HEADER]
    for name, model in tables.items():
        schema = model.to_schema()
        arrow = arrow_schema(model)
        parts.append(f"\n## `{name}`\n\n{getattr(model.Config, 'description', '')}\n")
        table_checks = [str(c.name) for c in schema.checks]
        unique = getattr(model.Config, "unique", None)
        if unique:
            table_checks.append(f"unique({', '.join(unique)})")
        if table_checks:
            parts.append(f"\nRow checks: {', '.join(table_checks)}.\n")
        parts.append(
            "\n| column | type | nullable | description | checks |\n|---|---|---|---|---|\n"
        )
        for column_name, column in schema.columns.items():
            arrow_type = arrow.field(column_name).type
            description = (column.description or "").replace("|", "\\|")
            nullable = "yes" if column.nullable else "no"
            parts.append(
                f"| `{column_name}` | {arrow_type} | {nullable} | {description} | {_checks(column)} |\n"
            )
    return "".join(parts)
