"""Query results as text: an aligned table, CSV or JSON, straight from Arrow (no pandas, so
``verse-etl query`` answers at once)."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import pyarrow as pa


def _plain(value: Any) -> Any:
    """A JSON-ready value: NaN becomes null; dates, decimals and bytes become text."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    return str(value)


def _cell(value: Any) -> str:
    return "null" if value is None else str(value)


def render(table: pa.Table, fmt: str) -> str:
    """``table`` as ``fmt``: ``table`` (columns aligned right), ``csv`` (header + rows) or ``json``
    (a list of records). Every format ends with a newline.

    Raises
    ------
    ValueError
        If ``fmt`` is not one of table, csv or json.
    """
    rows = table.to_pylist()
    names = table.column_names
    if fmt == "json":
        records = [{k: _plain(v) for k, v in row.items()} for row in rows]
        return json.dumps(records, separators=(",", ":"), default=str) + "\n"
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if row[n] is None else row[n] for n in names] for row in rows])
        return text.getvalue()
    if fmt == "table":
        cells = [names] + [[_cell(row[n]) for n in names] for row in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(names))]
        lines = [" ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
        return "\n".join(lines) + "\n" + ("(no rows)\n" if not rows else "")
    raise ValueError(f"unknown output format {fmt!r} (expected table, csv or json)")
