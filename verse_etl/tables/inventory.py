"""What a finished build holds, read back from disk (for the CLI summary and the tests)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from verse_etl.errors import InputError
from verse_etl.paths import VOLUMES_DIR, table_dir
from verse_etl.schemas.layout import TABLE_NAMES


@dataclass(frozen=True)
class Inventory:
    """Row counts per table, volume stores and quarantine counts per check."""

    rows: dict[str, int]
    stores: int
    store_files: int
    store_bytes: int
    quarantine_by_check: dict[str, int]


def read_inventory(out: Path) -> Inventory:
    """Read the Parquet footers and walk the volume stores of the build at ``out``.

    Raises
    ------
    InputError
        If a table is missing (the build did not finish, or ``out`` is not a build folder).
    """
    rows: dict[str, int] = {}
    for name in TABLE_NAMES:
        path = table_dir(out, name)
        files = sorted(path.glob("source=*/release=*/*.parquet"))
        if not files:
            raise InputError(
                path,
                "table not found",
                "run `verse-etl build` (or `dvc repro`) first",
                check="inventory",
            )
        rows[name] = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    stores = list((out / VOLUMES_DIR).rglob("*.zarr"))
    files = [p for store in stores for p in store.rglob("*") if p.is_file()]
    # The footers and the one column needed, read straight from the files: no contracts (and
    # no pandas) to load, so `verse-etl summary` answers at once.
    checks = [
        check
        for f in sorted(table_dir(out, "quarantine").glob("source=*/release=*/*.parquet"))
        for check in pq.ParquetFile(f).read(columns=["check_name"]).column("check_name").to_pylist()
    ]
    return Inventory(
        rows=rows,
        stores=len(stores),
        store_files=len(files),
        store_bytes=sum(p.stat().st_size for p in files),
        quarantine_by_check=dict(sorted(Counter(checks).items())),
    )
