"""How the tables are laid out on disk, for readers without pandas and pandera (``verse-etl
query``, ``summary``, a ``pip install .`` reading a release): table names, row order and
partition keys.

A copy: each table's contract (its :class:`~verse_etl.schemas.table.Table` in the other modules
of this package) is the source of truth, and ``tests/unit/schemas/test_table.py`` fails when this
copy differs from it.
"""

from __future__ import annotations

from verse_etl.schemas.table import PARTITION_BY

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
"""Row order of each table (files are byte-identical from build to build): the contracts'."""

__all__ = ["PARTITION_BY", "SORT_KEYS", "TABLE_NAMES"]
