"""The contracts' doctests: pytest's ``--doctest-modules`` cannot collect ``schemas/`` (its
folder would be imported as a bare top-level ``schemas``), so they run here under their
installed name ``verse_etl.schemas``."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest
import verse_etl.schemas

MODULES = sorted(
    m.name for m in pkgutil.iter_modules(verse_etl.schemas.__path__, "verse_etl.schemas.")
)


def test_every_contract_module_is_found() -> None:
    assert {"verse_etl.schemas.anatomy", "verse_etl.schemas.table"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    if ">>> " in inspect.getsource(module):
        assert result.attempted > 0, f"{name}: its examples were not found"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
