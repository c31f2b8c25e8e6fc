"""Contract of ``quarantine.parquet``: every record the build rejected or flagged, with the reason."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series
from verse_etl.schemas.checks import MOSMED_RELEASES, PARTITION_NOTE, VERSE_RELEASES
from verse_etl.schemas.table import Table


class QuarantineTable(pa.DataFrameModel):
    """One row per rejected or flagged record. Nothing leaves the build silently."""

    case_id: Series[str] = pa.Field(
        description="Scan id, or study folder (MosMed) the record belongs to."
    )
    table_name: Series[str] = pa.Field(
        description="Table the record was meant for ('' for a whole case)."
    )
    file: Series[str] = pa.Field(
        description="Source file at fault, relative to its source root where possible."
    )
    check_name: Series[str] = pa.Field(
        description="Name of the failed check (e.g. read, mask_integral, superior_above_inferior)."
    )
    reason: Series[str] = pa.Field(
        description="What is wrong, with expected and found values, and what to do."
    )
    severity: Series[str] = pa.Field(
        isin=["warn", "raise"],
        description="warn: flagged, build goes on; raise: fails the build after all cases ran.",
    )
    record: Series[str] = pa.Field(description="The rejected row as JSON ('' for a whole case).")

    source: Series[str] = pa.Field(
        isin=["verse", "mosmed"], description="Source dataset of the record."
    )
    release: Series[str] = pa.Field(
        isin=[*VERSE_RELEASES, *MOSMED_RELEASES, "unknown"],
        description="Release of the case the record belongs to (the scan's or annotation's release; ctlungca500 for MosMed studies; unknown where the file does not say)."
        + PARTITION_NOTE,
    )

    class Config:
        strict = True
        coerce = True
        description = "Rejected and flagged records with file, check and reason."


QUARANTINE = Table(
    name="quarantine",
    model=QuarantineTable,
    sort_keys=("source", "case_id", "table_name", "file", "check_name", "reason"),
    step="quarantine",
    source="",
    case_column="case_id",
    file_column="file",
)
"""``quarantine``: every record the cases and the tables step collected (each names its source)."""
