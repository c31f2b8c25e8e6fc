"""sha256 of every file below a folder, for tests that compare two builds or two samples byte by
byte."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def file_digests(
    root: Path, parts: Sequence[str] = ("",), skip: Sequence[str] = ()
) -> dict[str, str]:
    """``{path relative to root: sha256}`` of the files below ``root / part`` for each of
    ``parts`` (the whole folder by default), leaving out paths with a component in ``skip``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for part in parts
        for p in sorted((root / part).rglob("*"))
        if p.is_file() and not set(skip) & set(p.relative_to(root).parts)
    }
