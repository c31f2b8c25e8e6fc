"""Per-case results: the rows one case contributes to each table, and what it sent to quarantine.

A case (a VerSe scan, a MosMed study) is processed on its own; its result is saved as a small JSON
file beside the stores so that an unchanged case is not processed again on the next build.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from verse_etl.errors import InputError
from verse_etl.io.archives import MEMBER_SEPARATOR
from verse_etl.io.atomic import atomic_file

CASE_FORMAT = 3
"""Bump when the rows or stores a case produces change meaning, so that saved results are
recomputed (3: Zarr ``dimension_names`` are the NGFF axes ``z, y, x``)."""


@dataclass(frozen=True)
class QuarantineRecord:
    """One rejected or flagged record (see ``schemas/quarantine.py``)."""

    source: str
    case_id: str
    table: str
    file: str
    check: str
    reason: str
    severity: str = "warn"
    record: str = ""

    @classmethod
    def from_error(
        cls, error: InputError, source: str, case_id: str, root: Path, table: str = ""
    ) -> QuarantineRecord:
        """Quarantine a whole case (or one of its files) because of ``error``."""
        return quarantine_record(
            source,
            case_id,
            relative(error.path, root),
            error.check,
            error.problem,
            fix=error.fix,
            table=table,
        )


def quarantine_record(
    source: str,
    case_id: str,
    file: str,
    check: str,
    problem: str,
    *,
    fix: str = "",
    table: str = "",
    severity: str = "warn",
    record: str = "",
) -> QuarantineRecord:
    """A quarantine record, its reason written the one way every record's is:
    ``"<file>: <problem>; <fix>"`` (as :class:`~verse_etl.errors.InputError` reads).

    Examples
    --------
    >>> quarantine_record("verse", "verse004", "a_ctd.json", "centroid_nan", "entry 2 holds NaN",
    ...                   fix="the entry is left out", table="vertebrae").reason
    'a_ctd.json: entry 2 holds NaN; the entry is left out'
    """
    return QuarantineRecord(
        source=source,
        case_id=case_id,
        table=table,
        file=file,
        check=check,
        reason=f"{file}: {problem}" + (f"; {fix}" if fix else ""),
        severity=severity,
        record=record,
    )


@dataclass
class CaseResult:
    """Rows and quarantine records of one case. ``converted`` is False when reused unchanged.

    ``stores`` keeps, by store path, what a store's writing gave beyond the rows (its key and
    statistics), so that a rebuild of the case whose store inputs are unchanged reuses the
    store (:mod:`verse_etl.verse.store`).
    """

    source: str
    case_id: str
    fingerprint: str
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    stores_written: int = 0
    converted: bool = True

    def add(self, table: str, row: dict[str, Any]) -> None:
        """Append one row to ``table``."""
        self.rows.setdefault(table, []).append(row)

    def flag(
        self,
        file: str,
        check: str,
        problem: str,
        *,
        fix: str = "",
        table: str = "",
        case_id: str | None = None,
    ) -> None:
        """Quarantine what ``file`` holds: the case's one collector of records (see
        :func:`quarantine_record`)."""
        self.quarantine.append(
            quarantine_record(
                self.source, case_id or self.case_id, file, check, problem, fix=fix, table=table
            )
        )

    def flag_error(
        self, error: InputError, root: Path, *, table: str = "", file: str | None = None
    ) -> None:
        """Quarantine ``error``, naming its file relative to the source ``root`` (or as
        ``file``: an archive member's name)."""
        name = file if file is not None else relative(error.path, root)
        self.flag(name, error.check, error.problem, fix=error.fix, table=table)

    def to_json(self) -> str:
        """Serialise (deterministically) for the case cache."""
        payload = {"format": CASE_FORMAT, **_fields(self)}
        payload.pop("converted")
        payload.pop("stores_written")
        if not payload["stores"]:
            payload.pop("stores")  # results that keep no store read as they did before
        # The records (dataclasses) become objects as the encoder meets them; the rows go to
        # the encoder as they are. (`dataclasses.asdict` copied every row and value first: ~10
        # ms a case here, paid again for every saved result whenever the tables are checked.)
        return json.dumps(payload, sort_keys=True, allow_nan=True, default=_record_fields)

    @classmethod
    def from_json(cls, text: str) -> CaseResult | None:
        """Load a cached result; None if it was written by another format version."""
        data = json.loads(text)
        if data.pop("format", None) != CASE_FORMAT:
            return None
        data["quarantine"] = [QuarantineRecord(**q) for q in data["quarantine"]]
        return cls(**data, converted=False, stores_written=0)


def _fields(value: Any) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in fields(value)}


def _record_fields(value: Any) -> dict[str, Any]:
    if is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    raise TypeError(f"{type(value).__name__} is not a value a case result keeps")


def discovery_result(source: str, problems: Sequence[InputError], root: Path) -> CaseResult:
    """Quarantine records of the files of ``source`` that discovery found but cannot use."""
    result = CaseResult(source=source, case_id="_discovery", fingerprint="")
    for error in problems:
        result.quarantine.append(QuarantineRecord.from_error(error, source, "_discovery", root))
    return result


def relative(path: Path | str, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string, or as given if it lies elsewhere.

    An archive member named ``<archive>!/<member>`` keeps its member name exactly as written
    (``../x``, ``/etc/x``): only the archive's path is made relative.

    Examples
    --------
    >>> relative("/data/verse/a.zip!//etc/passwd", Path("/data/verse"))
    'a.zip!//etc/passwd'
    """
    return relative_names([path], root)[0]


def relative_names(paths: Iterable[Path | str], root: Path) -> list[str]:
    """:func:`relative` of each of ``paths``, resolving ``root`` and each folder once (a study's
    hundreds of DICOM files share a folder: resolving it for each file was most of what
    checking an unchanged study cost).

    A ``Path`` (as discovery gives) is named with string operations on its text, which pathlib
    has normalised already: 3 against 23 us a file, paid for every file of every study at every
    build's reuse checks. Any other input goes through pathlib, which normalises it first."""
    base_root = root.resolve()
    prefix = f"{base_root.as_posix().rstrip('/')}/"
    folders: dict[str, str] = {}
    names = []
    for path in paths:
        archive, separator, member = str(path).partition(MEMBER_SEPARATOR)
        folder, name = os.path.split(archive)
        if not isinstance(path, Path) or name in ("", ".", "..") or os.sep != "/":
            names.append(_relative_name(archive, separator, member, base_root))
            continue
        # The folders are resolved, not the name itself: a link is named as the link (a broken
        # one would otherwise be named by the missing file it points at).
        resolved = folders.get(folder)
        if resolved is None:
            resolved = folders[folder] = os.path.realpath(folder or ".")
        full = os.path.join(resolved, name)
        if full.startswith(prefix):
            base = full[len(prefix) :]
        else:
            base = "." if full == prefix[:-1] else archive
        names.append(f"{base}{separator}{member}")
    return names


def _relative_name(archive: str, separator: str, member: str, base_root: Path) -> str:
    path = Path(archive)
    try:
        base = (path.parent.resolve() / path.name).relative_to(base_root).as_posix()
    except ValueError:
        base = path.as_posix()
    return f"{base}{separator}{member}"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename
    (:func:`verse_etl.io.atomic.atomic_file`, under ``<name>.tmp-<pid>``: the name the
    cleanups of an interrupted build look for)."""
    try:
        with atomic_file(path, path.with_name(f"{path.name}.tmp-{os.getpid()}")) as f:
            f.write(text.encode("utf-8"))
    except OSError as e:
        if e.filename is not None:
            raise
        # A failed write() names no file (a full disk): name the one being written.
        raise OSError(e.errno, e.strerror, str(path)) from e


def load_saved(path: Path) -> CaseResult | None:
    """The saved result at ``path`` whatever its key; None if missing, unreadable or of another
    format."""
    try:
        return CaseResult.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def load_cached(path: Path, fingerprint: str) -> CaseResult | None:
    """The saved result at ``path`` if it exists and matches ``fingerprint``."""
    cached = load_saved(path)
    if cached is None or cached.fingerprint != fingerprint:
        return None
    return cached
