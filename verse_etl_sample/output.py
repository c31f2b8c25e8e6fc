"""Atomic, deterministic file output for the sample writers.

Every file is written to a hidden temporary name beside its target and moved into place with
:func:`os.replace`, so a reader (or an interrupted run) never sees half a file. Nothing written
here depends on the clock: gzip members carry mtime 0 and no file name.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from verse_etl.errors import ParamsError

# The writers live in verse_etl.io.atomic (standard library only, for the light reader install).
from verse_etl.io.atomic import (  # noqa: F401  (re-exported for the sample writers)
    GZIP_LEVEL,
    atomic_file,
    gzip_member,
    write_bytes_atomic,
    write_text_atomic,
)


def claim_outputs(roots: Iterable[Path], *, overwrite: bool) -> None:
    """Make sure the folders a writer owns are empty before it writes into them.

    A sample written over an older one with other arguments would mix two samples, so an
    existing non-empty folder is an error unless ``overwrite`` is set, in which case exactly
    these folders (never their parents) are deleted.

    Parameters
    ----------
    roots
        Folders (or single files) the writer will fill and owns entirely.
    overwrite
        Delete them instead of refusing.

    Raises
    ------
    ParamsError
        If one exists, is not empty and ``overwrite`` is false.
    """
    for root in roots:
        if not root.exists():
            continue
        if root.is_dir() and not any(root.iterdir()):
            continue
        if not overwrite:
            raise ParamsError(
                f"{root}: sample output already exists (expected a missing or empty folder, got "
                "existing files); delete it, choose another --out, or pass overwrite=True"
            )
        if root.is_dir():
            shutil.rmtree(root)
        else:
            root.unlink()
