"""How the tables are laid out on disk, without the contracts: names, row order and partition
keys. Plain data, so that reading a build (``verse-etl query``, ``summary``) need not import
pandas and pandera; the contracts themselves are in the other modules of this package."""

from __future__ import annotations

TABLE_NAMES: tuple[str, ...] = (
    "scans",
    "vertebrae",
    "verse_fracture_grades",
    "series",
    "mosmed_vertebrae",
    "mosmed_consensus",
    "mosmed_expert_pairs",
    "quarantine",
)
"""Every table, in the order builds write and print them."""

SORT_KEYS: dict[str, tuple[str, ...]] = {
    "scans": ("scan_id",),
    "vertebrae": ("scan_id", "label"),
    "verse_fracture_grades": ("scan_id", "label"),
    "series": ("folder", "series_uid"),
    "mosmed_vertebrae": ("folder", "release", "expert", "vertebra_index"),
    "mosmed_consensus": ("folder", "release", "vertebra"),
    "mosmed_expert_pairs": ("folder", "expert_v1", "expert_v2"),
    "quarantine": ("source", "case_id", "table_name", "file", "check_name", "reason"),
}
"""Row order of each table: files are byte-identical from build to build."""

PARTITION_BY: tuple[str, ...] = ("source", "release")
"""Hive partition keys of every table: ``tables/<table>/source=<s>/release=<r>/part-0.parquet``.
Each contract declares both as its last columns; their values live in the folder names, not in
the files, so a reader that appends the partition keys to a file's columns gets contract order."""
