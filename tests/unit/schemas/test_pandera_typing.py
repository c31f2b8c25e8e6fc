"""Contracts build their schemas without importing dask.dataframe, and lose no column, type or
check by it (schemas/pandera_typing.py)."""

from __future__ import annotations

import json
import subprocess
import sys

_DESCRIBE = r"""
import json, sys
if sys.argv[1] == "dask first":
    import dask.dataframe, pandera.typing.dask  # pandera's own typing, Dask's types included
    assert pandera.typing.dask.DASK_INSTALLED
from verse_etl.schemas import CONTRACTS

def checks(items):
    return [[c.name, str(c.error), str(c.statistics)] for c in items]

described = {}
for name, table in sorted(CONTRACTS.items()):
    schema = table.model.to_schema()
    described[name] = {
        "columns": {
            column: [str(spec.dtype), spec.nullable, spec.unique, spec.coerce, checks(spec.checks)]
            for column, spec in schema.columns.items()
        },
        "checks": checks(schema.checks),
        "strict": str(schema.strict),
    }
print(json.dumps({"dask_dataframe": "dask.dataframe" in sys.modules, "schemas": described}))
"""


def _describe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _DESCRIBE, mode], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_contracts_skip_dask_dataframe_and_keep_every_check() -> None:
    light = _describe("default")
    full = _describe("dask first")
    assert light["dask_dataframe"] is False
    assert full["dask_dataframe"] is True
    assert light["schemas"] == full["schemas"]
    assert sum(len(s["columns"]) for s in light["schemas"].values()) > 100  # really described
