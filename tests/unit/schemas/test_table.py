"""The table contracts (``schemas/``): each ``Table`` beside its model is consistent with the
model's columns, the light layout copy equals them, and rows are built with exactly the columns
of the contract."""

from __future__ import annotations

import pytest
from verse_etl.schemas import CONTRACTS, SCANS, VERTEBRAE, RowError, layout

from verse_etl.tables.assemble import _function


def test_the_light_layout_is_the_contracts() -> None:
    assert tuple(CONTRACTS) == layout.TABLE_NAMES
    assert {name: t.sort_keys for name, t in CONTRACTS.items()} == layout.SORT_KEYS


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_every_column_a_table_names_is_one_of_its_own(name: str) -> None:
    table = CONTRACTS[name]
    columns = set(table.columns)
    named = {*table.sort_keys, table.case_column, table.file_column or table.case_column}
    if table.parent:
        key, parent = table.parent
        named.add(key)
        assert key in CONTRACTS[parent].columns
    assert named <= columns, named - columns
    assert table.columns[-2:] == table.partition_by
    if table.derived_from:
        assert CONTRACTS[table.derived_from].step == "cases"
    for function in (table.derive, table.file_of):
        if function:
            assert callable(_function(function)), function


def test_a_row_has_exactly_the_contract_columns() -> None:
    row = {c: None for c in SCANS.row_columns}
    assert SCANS.row(row) == row
    assert "release" in SCANS.row_columns and "source" not in SCANS.row_columns
    assert "release" not in VERTEBRAE.row_columns  # the scan's
    with pytest.raises(
        RowError, match=r"missing columns \['store_path'\], unknown columns \['store_pth'\]"
    ):
        SCANS.row({k: v for k, v in row.items() if k != "store_path"}, store_pth="x")
