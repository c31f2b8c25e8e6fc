"""The command line: quick commands import only what they need, enumerated options list their
choices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner
from verse_etl.schemas.layout import PARTITION_BY, SORT_KEYS, TABLE_NAMES

from verse_etl.cli import app

# What `--help`, `query` and `summary` must not load: the contracts and pandas (seconds), the
# image readers, Prefect, the volume stores.
HEAVY = ("pandas", "pandera", "pydicom", "nibabel", "prefect", "zarr", "dask", "scipy", "dvc")
CONTRACTS = (
    "verse_etl.schemas.scans",
    "verse_etl.schemas.quarantine",
    "verse_etl.tables.parquet",
    "verse_etl.tables.assemble",
)

_PROBE = """
import json, sys
from verse_etl.cli import app
try:
    app(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build folder with one partition file of one row per table, holding the sort keys."""
    out = tmp_path_factory.mktemp("build")
    for name in TABLE_NAMES:
        folder = out / "tables" / name / "source=verse" / "release=verse19"
        folder.mkdir(parents=True)
        keys = [k for k in SORT_KEYS[name] if k not in PARTITION_BY]
        columns = {k: ["label_islands" if k == "check_name" else "gl003"] for k in keys}
        pq.write_table(pa.table(columns), folder / "part-0.parquet")
    return out


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["query", "SELECT scan_id, release FROM scans", "--out", "{out}", "--format", "csv"],
        ["summary", "{out}"],
    ],
    ids=["help", "query", "summary"],
)
def test_quick_commands_import_neither_contracts_nor_pandas(build: Path, args: list[str]) -> None:
    argv = [a.replace("{out}", str(build)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip(), proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["code"] in (0, None), proc.stdout + proc.stderr
    loaded = set(report["modules"])
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in CONTRACTS)
    assert not heavy, f"verse-etl {args[0]} imported {heavy[:10]}"
    if args[0] == "query":
        assert "scan_id,release\ngl003,verse19\n" in proc.stdout
    if args[0] == "summary":
        assert "1 x label_islands" in proc.stdout


@pytest.mark.parametrize(
    ("args", "option", "choices"),
    [
        (["query", "SELECT 1", "--format", "xml"], "--format", ("table", "csv", "json")),
        (["build", "--runner", "spark"], "--runner", ("threads", "dask")),
        (["ingest", "verse", "--runner", "spark"], "--runner", ("threads", "dask")),
        (["sample", "--out", "x", "--size", "huge"], "--size", ("tiny", "small", "real")),
    ],
)
def test_enumerated_options_reject_other_values_with_the_valid_list(
    args: list[str], option: str, choices: tuple[str, ...]
) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"Invalid value for '{option}'" in message
    assert all(f"'{c}'" in message for c in choices), message


def test_contracts_end_with_the_partition_keys_the_catalog_appends() -> None:
    # verse_etl.read.catalog selects `*` from the files plus the hive keys DuckDB appends: contract
    # order only while every contract declares the partition keys last, in PARTITION_BY order.
    from verse_etl.schemas import TABLES

    assert tuple(TABLES) == TABLE_NAMES
    for name, model in TABLES.items():
        columns = tuple(model.to_schema().columns)
        assert columns[-len(PARTITION_BY) :] == PARTITION_BY, name
