"""Small JSON input files (centroids, sidecars, annotations), bounded before they are parsed.

Spec: RFC 8259. Python's parser recurses once per nested array or object, so a file of a
hundred thousand ``[`` raises ``RecursionError`` (or, in a thread with a small stack, worse), and
a huge file is read whole into memory. Here the size is bounded while reading
(:func:`~verse_etl.io.files.read_bounded`) and the nesting depth is measured on the raw bytes,
strings masked out, before ``json.loads`` sees them. Real VerSe and MosMed files are a few KiB
and at most 4 levels deep.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from verse_etl.errors import InputError
from verse_etl.io.files import SourceFile, read_bounded
from verse_etl.params import InputLimits

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def nesting_depth(raw: bytes) -> int:
    """Deepest nesting of arrays and objects in JSON text (brackets inside strings not counted).

    Examples
    --------
    >>> nesting_depth(b'[{"direction": ["P", "I", "R"]}, {"label": 1}]')
    3
    >>> nesting_depth(b'{"a": "[[[[["}'), nesting_depth(b'17')
    (1, 0)
    """
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    if not brackets:
        return 0
    steps = _OPEN[np.frombuffer(brackets, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max())


def read_json(
    path: Path | SourceFile,
    limits: InputLimits,
    check: str,
    what: str = "",
    encoding: str = "utf-8",
) -> object:
    """Parse a small JSON file after bounding its size and nesting.

    Parameters
    ----------
    path
        The file (on disk or a zip member).
    limits
        ``max_json_bytes`` and ``max_json_depth``.
    check
        Check name of a file that is not valid JSON (e.g. ``centroid_json``).
    what
        Prefix of that message (``"sidecar "`` gives "sidecar is not valid JSON").
    encoding
        Text encoding (``utf-8-sig`` accepts a byte-order mark).

    Raises
    ------
    InputError
        ``too_large`` (more than ``max_json_bytes``), ``too_deep`` (nested more than
        ``max_json_depth``), ``not_regular_file`` (FIFO, device, ...), or ``check``.
    """
    try:
        raw = read_bounded(path, limits.max_json_bytes)
    except InputError:
        raise
    except OSError as e:
        raise InputError(
            path, f"{what}is not valid JSON ({e})", "re-download the file", check=check
        ) from e
    depth = nesting_depth(raw)
    if depth > limits.max_json_depth:
        raise InputError(
            path,
            f"JSON nested {depth} levels deep (expected at most checks.limits.max_json_depth "
            f"= {limits.max_json_depth}); not parsed",
            "check that it is the file its name says",
            check="too_deep",
        )
    try:
        return json.loads(raw.decode(encoding))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(
            path, f"{what}is not valid JSON ({e})", "re-download the file", check=check
        ) from e
