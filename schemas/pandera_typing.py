"""pandera's typing of the pandas backend alone, without importing ``dask.dataframe``.

The first schema a pandera model builds asks ``pandera.typing.get_index_types()`` (and
``get_series_types()``) which annotations are index and series types; those import
``pandera.typing.dask`` (and modin's, pyspark's), and ``pandera.typing.dask`` imports
``dask.dataframe`` whenever Dask is installed, only to add Dask's ``Index`` and ``Series`` to
those sets. Dask is installed beside the build (Prefect's Dask runner), so every process that
validated a table or built a row through a contract paid the import of ``dask.dataframe``
(0.7 s idle, ~5 s at load 15), which no contract uses: every contract is a pandas model
annotated with pandas types.

:func:`pandas_typing_only` imports ``pandera.typing.dask`` once with ``dask.dataframe``
made unimportable for the moment, so pandera records Dask's dataframe typing as absent (its own
``except ImportError`` path), then puts the import system back: ``dask.dataframe`` itself stays
importable (Prefect's Dask runner, users). What is lost is only pandera's recognition of
``pandera.typing.dask`` annotations in this process, which no contract has; the columns,
types and checks every contract builds are the same
(``tests/unit/schemas/test_pandera_typing.py`` compares them with and without).
"""

from __future__ import annotations

import sys


def pandas_typing_only() -> None:
    """Load ``pandera.typing.dask`` without ``dask.dataframe`` unless either is loaded already
    (then there is nothing to save, and whoever loaded them keeps what they got)."""
    if "pandera.typing.dask" in sys.modules or "dask.dataframe" in sys.modules:
        return
    sys.modules["dask.dataframe"] = None  # type: ignore[assignment]  # `import` raises ImportError
    try:
        import pandera.typing.dask  # noqa: F401  # records DASK_INSTALLED = False
    finally:
        del sys.modules["dask.dataframe"]
