"""The layout of a build, as functions of (build root, source, case). The only place that knows it.

::

    <out>/tables/<table>/source=<s>/release=<r>/part-0.parquet   metadata tables (hive partitions)
    <out>/volumes/verse/<scan_id>.zarr                 CT at 0, labels at labels/vertebrae/0
    <out>/volumes/mosmed/<Folder>/<SeriesUID>.zarr     CT at 0
    <out>/cases/<source>/<case_id>.json                per-case results (incremental rebuilds)
    <out>/metrics.json                                 counts, for `dvc metrics`
"""

from __future__ import annotations

from pathlib import Path

TABLES_DIR = "tables"
VOLUMES_DIR = "volumes"
CASES_DIR = "cases"
IMAGE_PATH = "0"
"""Level 0 of the CT inside a volume store."""
LABELS_PATH = "labels/vertebrae/0"
"""Level 0 of the vertebra label image inside a VerSe volume store."""


PART_FILE = "part-0.parquet"


def table_dir(out: Path, name: str) -> Path:
    """Folder of table ``name``: one hive partition folder per (source, release) below it."""
    return out / TABLES_DIR / name


def partition_path(table: Path, source: str, release: str) -> Path:
    """Parquet file of one partition of the table folder ``table``."""
    return table / f"source={source}" / f"release={release}" / PART_FILE


def verse_store_path(out: Path, scan_id: str) -> Path:
    """Zarr store of one VerSe scan."""
    return out / VOLUMES_DIR / "verse" / f"{scan_id}.zarr"


def mosmed_store_path(out: Path, folder: str, series_uid: str) -> Path:
    """Zarr store of one MosMed series (the UID is kept verbatim, trailing '.' included)."""
    return out / VOLUMES_DIR / "mosmed" / folder / f"{series_uid}.zarr"


def case_result_path(out: Path, source: str, case_id: str) -> Path:
    """Saved result of one case."""
    return out / CASES_DIR / source / f"{case_id}.json"


def metrics_path(out: Path) -> Path:
    """Build metrics (counts) read by ``dvc metrics show``."""
    return out / "metrics.json"
