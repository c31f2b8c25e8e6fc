"""Table contracts: one pandera model per Parquet table, the only home of its columns, types,
checks and descriptions. ``TABLES`` maps the table (file) name to its model.
"""

from schemas.mosmed_consensus import MosmedConsensusTable
from schemas.mosmed_expert_pairs import MosmedExpertPairsTable
from schemas.mosmed_vertebrae import MosmedVertebraeTable
from schemas.quarantine import QuarantineTable
from schemas.scans import ScansTable
from schemas.series import SeriesTable
from schemas.verse_fracture_grades import VerseFractureGradesTable
from schemas.vertebrae import VertebraeTable

TABLES = {
    "scans": ScansTable,
    "vertebrae": VertebraeTable,
    "verse_fracture_grades": VerseFractureGradesTable,
    "series": SeriesTable,
    "mosmed_vertebrae": MosmedVertebraeTable,
    "mosmed_consensus": MosmedConsensusTable,
    "mosmed_expert_pairs": MosmedExpertPairsTable,
    "quarantine": QuarantineTable,
}

SORT_KEYS: dict[str, tuple[str, ...]] = {
    "scans": ("scan_id",),
    "vertebrae": ("scan_id", "label"),
    "verse_fracture_grades": ("scan_id", "label"),
    "series": ("folder", "series_uid"),
    "mosmed_vertebrae": ("folder", "release", "expert", "vertebra_index"),
    "mosmed_consensus": ("folder", "release", "vertebra"),
    "mosmed_expert_pairs": ("folder", "expert_v1", "expert_v2"),
    "quarantine": ("source", "case_id", "table", "file", "check", "reason"),
}
"""Row order of each table: files are byte-identical from build to build."""

PARTITION_BY: tuple[str, ...] = ("source", "release")
"""Hive partition keys of every table: ``tables/<table>/source=<s>/release=<r>/part-0.parquet``.
Each contract declares both as columns; their values live in the folder names, not in the files."""

__all__ = [
    "PARTITION_BY",
    "SORT_KEYS",
    "TABLES",
    "MosmedConsensusTable",
    "MosmedExpertPairsTable",
    "MosmedVertebraeTable",
    "QuarantineTable",
    "ScansTable",
    "SeriesTable",
    "VerseFractureGradesTable",
    "VertebraeTable",
]
