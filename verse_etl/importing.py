"""A command's heavy imports, made without Python's cyclic garbage collector.

A build imports Prefect, pandas, pyarrow, pydicom, scipy and zarr before its first case: about
2 s here, during which the collector runs hundreds of times, each older-generation pass walking
every object the imports have made so far (classes, functions, pydantic schemas), none of them
garbage. :func:`imports_without_collector` pauses it while a command imports, then freezes what
the imports made (:func:`gc.freeze`: moved out of the collector's reach for good, as they live
as long as the process), so the collections during the build do not walk them either.

The collector is on again when the block ends, however it ends. At exit the frozen objects
are handed back to it (:func:`gc.unfreeze`), so that the interpreter's last collections free
them as they would have: extension modules that count their objects at exit (duckdb's, through
nanobind) otherwise print every frozen one as a leak.
"""

from __future__ import annotations

import atexit
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
            atexit.unregister(gc.unfreeze)  # once, however many blocks
            atexit.register(gc.unfreeze)
            gc.enable()
