"""What a table is beyond its columns: the :class:`Table` descriptor each contract module declares
beside its pandera model (row order, partitioning, the build step that writes the rows, and how
a rejected row is traced back to its case and file), and the typed row constructor the library
builds that table's rows with (:meth:`Table.row`).

Plain data and no pandas: only the contracts themselves import pandera.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from verse_etl.errors import VerseEtlError

if TYPE_CHECKING:
    import pandera.pandas as pa

PARTITION_BY: tuple[str, ...] = ("source", "release")
"""Hive partition keys of every table: ``tables/<table>/source=<s>/release=<r>/part-0.parquet``.
Each contract declares both as its last columns; their values live in the folder names, not in
the files, so a reader that appends the partition keys to a file's columns gets contract order."""

Step = Literal["cases", "derived", "quarantine"]
"""How the tables step (``verse_etl.tables.assemble``) gets a table's rows: from the case results
(rows each case added), derived from another validated table, or from the quarantine records."""


class RowError(VerseEtlError, TypeError):
    """A row built for a table does not have the table's columns: a bug in the library (a
    misspelt or forgotten column), caught where the row is built rather than at validation."""

    exit_code = 1
    label = "bug"


@dataclass(frozen=True)
class Table:
    """A table's contract beyond its columns.

    Attributes
    ----------
    name
        Table (folder) name: ``tables/<name>/``.
    model
        The pandera model: columns, types, checks, descriptions.
    sort_keys
        Row order, so that files are byte-identical from build to build.
    step
        Which part of the tables step writes the rows (:data:`Step`).
    source
        The source every row comes from (the ``source`` partition); quarantine records carry
        their own.
    case_column, file_column
        Columns naming the case and the source file of a row in its quarantine records;
        ``file_column`` None: ``file_of`` says.
    release
        The ``release`` partition of every row, for tables whose rows have none of their own.
    parent
        ``(key column, parent table)``: a row whose parent row was rejected is rejected too
        (no vertebra without its scan).
    release_from_parent
        The rows' ``release`` is their parent row's (else, with no fixed ``release``, each row
        carries its own).
    derived_from, derive
        For ``step="derived"``: the validated table the rows are computed from, and the
        function computing them as ``"module:function"`` (named, not imported: contracts do
        not import the library).
    file_of
        ``"module:function"`` naming the source file of a row that has no file column:
        ``function(row, check, parent_row) -> str``.
    """

    name: str
    model: type[pa.DataFrameModel]
    sort_keys: tuple[str, ...]
    step: Step
    source: str
    case_column: str
    file_column: str | None
    release: str | None = None
    parent: tuple[str, str] | None = None
    release_from_parent: bool = False
    derived_from: str | None = None
    derive: str | None = None
    file_of: str | None = None

    @property
    def partition_by(self) -> tuple[str, ...]:
        """The hive partition keys (the same for every table)."""
        return PARTITION_BY

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column, in contract order (partition keys last)."""
        return tuple(self.model.to_schema().columns)

    @property
    def row_columns(self) -> frozenset[str]:
        """The columns a row built for this table must have: all but the partition keys the
        tables step fills (``source`` always; ``release`` unless the rows carry their own)."""
        filled = {"source"} if self._rows_carry_release else {"source", "release"}
        return frozenset(self.columns) - filled

    @property
    def _rows_carry_release(self) -> bool:
        return self.release is None and not self.release_from_parent

    def row(self, values: Mapping[str, Any] | None = None, /, **columns: Any) -> dict[str, Any]:
        """A row of this table: exactly :attr:`row_columns`, or :class:`RowError` naming the
        missing and unknown ones.

        Examples
        --------
        >>> from verse_etl.schemas import VERSE_FRACTURE_GRADES, RowError
        >>> try:
        ...     VERSE_FRACTURE_GRADES.row(scan_id="verse001", grade=1)
        ... except RowError as e:
        ...     print(str(e)[:72])
        verse_fracture_grades row: missing columns ['age_ct', 'bmd', 'ct_device'
        """
        row = {**(values or {}), **columns}
        missing = sorted(self.row_columns - row.keys())
        unknown = sorted(row.keys() - self.row_columns)
        if missing or unknown:
            raise RowError(
                f"{self.name} row: missing columns {missing}, unknown columns {unknown} "
                f"(expected the columns of {self.model.__name__} but the partition keys the "
                f"tables step fills: {sorted(self.row_columns ^ set(self.columns))}); "
                "fix the row builder or the contract"
            )
        return row
