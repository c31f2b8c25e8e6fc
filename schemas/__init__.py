"""Table contracts: one module per Parquet table, the only home of its columns, types, checks
and descriptions (the pandera model) and of its row order, partitioning, the step that writes
it and how its rows trace back to their files (the :class:`~verse_etl.schemas.table.Table`
beside the model). ``CONTRACTS`` maps each table name to its ``Table``, ``TABLES`` to its model.

The models (and pandas with them) load on first use of ``CONTRACTS``, ``TABLES``, ``SORT_KEYS``
or a model or table name: what only needs the layout (``schemas.layout``: names, sort keys,
partition keys) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from verse_etl.schemas.layout import TABLE_NAMES
from verse_etl.schemas.table import PARTITION_BY, RowError, Table

# table name -> (module, model class, Table constant)
_CONTRACTS: dict[str, tuple[str, str, str]] = {
    "scans": ("scans", "ScansTable", "SCANS"),
    "vertebrae": ("vertebrae", "VertebraeTable", "VERTEBRAE"),
    "verse_fracture_grades": (
        "verse_fracture_grades",
        "VerseFractureGradesTable",
        "VERSE_FRACTURE_GRADES",
    ),
    "series": ("series", "SeriesTable", "SERIES"),
    "mosmed_vertebrae": ("mosmed_vertebrae", "MosmedVertebraeTable", "MOSMED_VERTEBRAE"),
    "mosmed_consensus": ("mosmed_consensus", "MosmedConsensusTable", "MOSMED_CONSENSUS"),
    "mosmed_expert_pairs": (
        "mosmed_expert_pairs",
        "MosmedExpertPairsTable",
        "MOSMED_EXPERT_PAIRS",
    ),
    "quarantine": ("quarantine", "QuarantineTable", "QUARANTINE"),
}


def _contracts() -> dict[str, Table]:
    contracts = {
        name: getattr(import_module(f"verse_etl.schemas.{module}"), constant)
        for name, (module, _model, constant) in _CONTRACTS.items()
    }
    for name, table in contracts.items():
        assert table.name == name, f"schemas/{_CONTRACTS[name][0]}.py declares {table.name!r}"
    return contracts


def __getattr__(name: str) -> Any:
    """``CONTRACTS``, ``TABLES``, ``SORT_KEYS`` and the models and tables, imported when first
    asked for."""
    if name in ("CONTRACTS", "TABLES", "SORT_KEYS"):
        contracts = _contracts()
        globals()["CONTRACTS"] = contracts
        globals()["TABLES"] = {n: t.model for n, t in contracts.items()}
        globals()["SORT_KEYS"] = {n: t.sort_keys for n, t in contracts.items()}
        return globals()[name]
    for module, model, constant in _CONTRACTS.values():
        if name in (model, constant):
            return getattr(import_module(f"verse_etl.schemas.{module}"), name)
    raise AttributeError(f"module 'schemas' has no attribute {name!r}")


__all__ = [
    "CONTRACTS",
    "MOSMED_CONSENSUS",
    "MOSMED_EXPERT_PAIRS",
    "MOSMED_VERTEBRAE",
    "PARTITION_BY",
    "QUARANTINE",
    "SCANS",
    "SERIES",
    "SORT_KEYS",
    "TABLES",
    "TABLE_NAMES",
    "VERSE_FRACTURE_GRADES",
    "VERTEBRAE",
    "MosmedConsensusTable",
    "MosmedExpertPairsTable",
    "MosmedVertebraeTable",
    "QuarantineTable",
    "RowError",
    "ScansTable",
    "SeriesTable",
    "Table",
    "VerseFractureGradesTable",
    "VertebraeTable",
]
