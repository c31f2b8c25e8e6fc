"""A command's heavy imports, made without Python's cyclic garbage collector.

A build imports Prefect, pandas, pyarrow, pydicom, scipy and zarr before its first case: about
2 s here, during which the collector runs hundreds of times, each older-generation pass walking
every object the imports have made so far (classes, functions, pydantic schemas), none of them
garbage. :func:`imports_without_collector` pauses it while a command imports, then freezes what
the imports made (:func:`gc.freeze`: moved out of the collector's reach for good, as they live
as long as the process), so the collections during the build do not walk them either.

The collector is on again when the block ends, however it ends. The frozen objects stay frozen
to the end: the interpreter's last collection skips them (0.07 s to exit after a build, against
0.45 s when they were handed back), and the process's memory goes back to the system at once.
One kind of module must not be imported inside the block: an extension that counts its objects
at exit (duckdb's, through nanobind) prints every frozen one as a leak. :mod:`verse_etl.read.catalog`
imports duckdb when a catalog is opened, after the block (tests/unit/test_importing.py checks
that the build's imports leave it out).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def imports_without_collector() -> Iterator[None]:
    """Pause the cyclic garbage collector inside (unless it was off already), then freeze the
    objects made meanwhile (see the module docstring)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()
