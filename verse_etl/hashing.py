"""Content hashes of source files and of build inputs (the keys of incremental rebuilds)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable sha256 over JSON-serialisable parts (dataclasses are taken field by field)."""

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return asdict(value)
        if isinstance(value, Path):
            return value.as_posix()
        raise TypeError(f"cannot fingerprint {type(value).__name__}")

    text = json.dumps(parts, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_files(paths: Iterable[Path], root: Path) -> dict[str, str]:
    """sha256 of each file, keyed by its POSIX path relative to ``root``."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(paths)}
