"""Table contracts: one pandera model per Parquet table, the only home of its columns, types,
checks and descriptions. ``TABLES`` maps the table (file) name to its model.

The models (and pandas with them) load on first use of ``TABLES`` or a model name: what only
needs the layout (``schemas.layout``: names, sort keys, partition keys) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from verse_etl.schemas.layout import PARTITION_BY, SORT_KEYS, TABLE_NAMES

# table name -> (module, model class)
_MODELS: dict[str, tuple[str, str]] = {
    "scans": ("verse_etl.schemas.scans", "ScansTable"),
    "vertebrae": ("verse_etl.schemas.vertebrae", "VertebraeTable"),
    "verse_fracture_grades": (
        "verse_etl.schemas.verse_fracture_grades",
        "VerseFractureGradesTable",
    ),
    "series": ("verse_etl.schemas.series", "SeriesTable"),
    "mosmed_vertebrae": ("verse_etl.schemas.mosmed_vertebrae", "MosmedVertebraeTable"),
    "mosmed_consensus": ("verse_etl.schemas.mosmed_consensus", "MosmedConsensusTable"),
    "mosmed_expert_pairs": ("verse_etl.schemas.mosmed_expert_pairs", "MosmedExpertPairsTable"),
    "quarantine": ("verse_etl.schemas.quarantine", "QuarantineTable"),
}


def __getattr__(name: str) -> Any:
    """``TABLES`` and the model classes, imported when first asked for."""
    if name == "TABLES":
        tables = {
            table: getattr(import_module(module), model)
            for table, (module, model) in _MODELS.items()
        }
        assert tuple(tables) == TABLE_NAMES, "schemas.layout.TABLE_NAMES and _MODELS disagree"
        globals()["TABLES"] = tables
        return tables
    for module, model in _MODELS.values():
        if name == model:
            return getattr(import_module(module), model)
    raise AttributeError(f"module 'schemas' has no attribute {name!r}")


__all__ = [
    "PARTITION_BY",
    "SORT_KEYS",
    "TABLES",
    "TABLE_NAMES",
    "MosmedConsensusTable",
    "MosmedExpertPairsTable",
    "MosmedVertebraeTable",
    "QuarantineTable",
    "ScansTable",
    "SeriesTable",
    "VerseFractureGradesTable",
    "VertebraeTable",
]
