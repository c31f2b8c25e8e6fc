"""The layout of a build, as functions of (build root, source, case). The only place that knows it.

::

    <out>/tables/<table>/source=<s>/release=<r>/part-0.parquet   metadata tables (hive partitions)
    <out>/volumes/verse/<scan_id>.<key>.zarr           CT at 0, labels at labels/vertebrae/0
    <out>/volumes/mosmed/<Folder>/<SeriesUID>.<key>.zarr  CT at 0
    <out>/cases/<source>/<case_id>.json                per-case results (incremental rebuilds)
    <out>/digests/<source>/<case_id>.json              stat -> sha256 of its source files (local state)
    <out>/metrics.json                                 counts, for `dvc metrics`

``<key>`` is the start of the key of the case result that wrote the store (see
:mod:`verse_etl.tables.generations`: a rebuild never overwrites a store published tables point at).

Identifiers that come from the sources (a VerSe scan id read from a file name, a MosMed study
folder name, a SeriesInstanceUID read from a DICOM header) are never used as path components as
they stand: :func:`safe_name` keeps an ordinary identifier readable and turns anything else (a
``..``, a ``/``, NUL, non-ASCII look-alikes, an over-long value, a name that differs from another
only in letter case) into a bounded, collision-free name. The original identifier is kept in the
tables and in the store attributes, which is how a name maps back. Every path derived here is
then checked by :func:`ensure_inside` (no symbolic link leads it out of the build root), and so is
every path the build deletes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

from verse_etl.errors import OutputPathError

TABLES_DIR = "tables"
VOLUMES_DIR = "volumes"
CASES_DIR = "cases"
DIGESTS_DIR = "digests"
REPORT_DIR = "report"
IMAGE_PATH = "0"
"""Level 0 of the CT inside a volume store."""
LABELS_PATH = "labels/vertebrae/0"
"""Level 0 of the vertebra label image inside a VerSe volume store."""


PART_FILE = "part-0.parquet"


Case = Literal["lower", "upper"]

_READABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
READABLE_MAX = 128
"""Longest identifier kept as it is (bytes = characters: readable names are ASCII); an encoded
name is at most 81 characters plus its suffix, far below NAME_MAX (255 bytes)."""
_PREFIX_MAX = 48
_DIGEST_CHARS = 32  # 128 bits of sha256: no two identifiers of any real dataset share a name
# Names Windows (and SMB shares, and some sync tools) reserve whatever the extension.
_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
)
# The letter case of the readable names of each source's folders. VerSe ids are lower case
# (``verse004``, ``gl003``), MosMed study folders upper case, UIDs have no letters. A name in the
# other case (or mixed) is encoded, so that no two names differ only in case: on a
# case-insensitive filesystem or object store mirror they would be one file.
SOURCE_CASE: dict[str, Case] = {"verse": "lower", "mosmed": "upper"}


def safe_name(identifier: str, case: Case, suffix: str = "") -> str:
    """A file or folder name for ``identifier`` (plus ``suffix``) that is safe on any filesystem.

    An identifier that is plain ASCII (letters, digits, ``.``, ``_``, ``-``; starting with a
    letter or digit), in the letter case ``case``, at most :data:`READABLE_MAX` characters, not a
    Windows device name, and whose name does not end in ``.`` is kept as it is. Anything else
    becomes ``<cleaned prefix>~<32 hex digits of its sha256>``: the ``~`` never occurs in a kept
    name and the digest is lower case, so the encoding is one-to-one even where letter case is
    not significant, and bounded in length. The mapping back is through the tables and store
    attributes, which keep the identifier itself.

    Examples
    --------
    >>> safe_name("verse004", "lower", ".zarr")
    'verse004.zarr'
    >>> safe_name("1.2.643.5.1.13.13.12.2.77.8252.604378326291304.583.", "upper", ".zarr")
    '1.2.643.5.1.13.13.12.2.77.8252.604378326291304.583..zarr'
    >>> safe_name("../../etc", "upper")
    'ETC~74ccf3c5b4c19a8167f9a3d1dd63e0e4'
    >>> safe_name("Verse004", "lower") != safe_name("verse004", "lower")
    True
    """
    readable = (
        len(identifier) <= READABLE_MAX
        and _READABLE.match(identifier) is not None
        and identifier == (identifier.lower() if case == "lower" else identifier.upper())
        and identifier.split(".", 1)[0].upper() not in _DEVICES
        and not f"{identifier}{suffix}".endswith(".")
    )
    if readable:
        return f"{identifier}{suffix}"
    raw = identifier.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(raw).hexdigest()[:_DIGEST_CHARS]
    prefix = _UNSAFE.sub("_", identifier)
    prefix = (prefix.lower() if case == "lower" else prefix.upper()).lstrip("._-")
    prefix = prefix[:_PREFIX_MAX].rstrip(".") or "id"
    return f"{prefix}~{digest}{suffix}"


def ensure_inside(root: Path, path: Path, follow: bool = True) -> Path:
    """Return ``path`` if it lies strictly inside ``root``, symbolic links followed.

    The last guard before a write or a delete below a build root: whatever produced ``path``
    (an identifier, a saved case result, a listing), nothing outside ``root`` is touched.
    ``follow=False`` checks where a symbolic link itself is (to delete the link) rather than
    where it points.

    Raises
    ------
    OutputPathError
        If ``path`` is ``root`` itself or resolves to a place outside it.
    """
    base = root.resolve()
    full = root / path  # keeps an absolute ``path`` as it is
    resolved = full.resolve() if follow else full.parent.resolve() / full.name
    if resolved == base or base not in resolved.parents or full.name in ("", ".", ".."):
        raise OutputPathError(
            f"{path}: path outside the build root (expected a path inside {base}, got "
            f"{resolved}); refusing to write or delete it. Remove the symbolic link or the "
            "identifier that leads there"
        )
    return path


def table_dir(out: Path, name: str) -> Path:
    """Folder of table ``name``: one hive partition folder per (source, release) below it."""
    return ensure_inside(out, out / TABLES_DIR / safe_name(name, "lower"))


def partition_path(table: Path, source: str, release: str) -> Path:
    """Parquet file of one partition of the table folder ``table``."""
    return table / f"source={source}" / f"release={release}" / PART_FILE


def _source(source: str) -> Case:
    if source not in SOURCE_CASE:
        raise ValueError(f"unknown source {source!r} (expected one of {sorted(SOURCE_CASE)})")
    return SOURCE_CASE[source]


def _store_suffix(key: str) -> str:
    # Stores are named after the key of the case result that wrote them (inputs, parameters,
    # code): a rebuild writes beside the store the published tables point at, never over it.
    return f".{key[:STORE_KEY_CHARS]}.zarr" if key else ".zarr"


STORE_KEY_CHARS = 12


def verse_store_path(out: Path, scan_id: str, key: str = "") -> Path:
    """Zarr store of one VerSe scan as built under store key ``key``
    (:func:`verse_etl.verse.store.scan_store_key`): ``<scan_id>.<key>.zarr``
    (``scan_id`` through :func:`safe_name`)."""
    name = safe_name(scan_id, "lower", _store_suffix(key))
    return ensure_inside(out, out / VOLUMES_DIR / "verse" / name)


def mosmed_store_path(out: Path, folder: str, series_uid: str, key: str = "") -> Path:
    """Zarr store of one MosMed series as built under store key ``key``
    (:func:`verse_etl.mosmed.store.series_store_key`):
    ``<Folder>/<SeriesInstanceUID>.<key>.zarr``. Ordinary folder names and UIDs are kept as they
    are (a UID's trailing '.' included); others go through :func:`safe_name`."""
    folder_name = safe_name(folder, "upper")
    uid_name = safe_name(series_uid, "upper", _store_suffix(key))
    return ensure_inside(out, out / VOLUMES_DIR / "mosmed" / folder_name / uid_name)


def case_result_name(source: str, case_id: str) -> str:
    """File name of the saved result of one case of ``source``."""
    return safe_name(case_id, _source(source), ".json")


def case_result_path(out: Path, source: str, case_id: str) -> Path:
    """Saved result of one case."""
    return ensure_inside(out, out / CASES_DIR / source / case_result_name(source, case_id))


def digest_cache_path(out: Path, source: str, case_id: str) -> Path:
    """The stat -> sha256 cache of one case's source files (:mod:`verse_etl.cases.stat_cache`)."""
    return ensure_inside(out, out / DIGESTS_DIR / source / case_result_name(source, case_id))


def metrics_path(out: Path) -> Path:
    """Build metrics (counts) read by ``dvc metrics show``."""
    return ensure_inside(out, out / "metrics.json")
