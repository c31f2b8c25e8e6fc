"""Reading a finished build: the DuckDB catalog behind ``verse-etl query``, its text output, and
exports (NIfTI, nnU-Net). :mod:`verse_etl.dataset` is the Python entry point."""
