"""The one rule by which a case reuses a store it kept instead of writing it again.

A case result keeps a record of each store it wrote (``CaseResult.stores``: a VerSe scan's
store, a MosMed series'), with the key the store was made under (exactly its inputs, parameters
and writer code). A rebuild of the case reuses the store only if the record is readable, was
made under the key the rebuild computes, names the path that key gives, and the store is still
there and complete; otherwise the store is written again (under its new key, beside the old).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar


class KeptStore(Protocol):
    """A store's record as a case result keeps it."""

    @property
    def key(self) -> str: ...

    @property
    def store_path(self) -> str: ...


S = TypeVar("S", bound=KeptStore)


def reusable(
    entry: object,
    parse: Callable[[dict[str, Any]], S | None],
    key: str,
    path: Path,
    out: Path,
    store_exists: Callable[[Path], bool],
) -> S | None:
    """The kept store ``entry`` (read by ``parse``; None if unreadable) if it was made under
    ``key`` at ``path`` and is still there, complete, in ``out``; else None."""
    store = parse(entry) if isinstance(entry, dict) else None
    if store is None or store.key != key or store.store_path != path.relative_to(out).as_posix():
        return None
    if not (store_exists(path) and (path / "zarr.json").is_file()):
        return None
    return store
