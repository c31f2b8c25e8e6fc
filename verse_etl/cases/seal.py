"""A case is a sealed unit: whatever one case (or one of its files) throws stays in that case.

A VerSe scan or a MosMed study is built on its own. Input errors the readers anticipate are
:class:`~verse_etl.errors.InputError`; anything else a broken or hostile file makes a library
raise (``RecursionError`` from nested JSON, ``OverflowError`` from a DICOM IS of ``1e9999``,
``MemoryError`` from a header claiming a huge image, pydicom's and nibabel's own errors) is turned
into an :class:`InputError` naming the file (:func:`verse_etl.errors.blame`), and as a last resort into one
quarantine record for the whole case (:func:`seal_case`). The other cases and the tables are
still written.

Only errors that may pass on a second try are let through, for the orchestrator to retry: I/O
trouble of a network filesystem or an object store (:func:`verse_etl.errors.is_transient`). A parse or decode
error is never transient: the same bytes fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from verse_etl.cases.records import CaseResult, write_text_atomic
from verse_etl.errors import (
    InputError,
    VerseEtlError,
    is_transient,
    output_error,
    output_trouble,
    unexpected,
)
from verse_etl.io.files import SourceFile
from verse_etl.paths import case_result_path


def seal_case(
    build: Callable[[], CaseResult],
    source: str,
    case_id: str,
    file: Path | SourceFile | str,
    root: Path,
    out: Path,
    table: str,
) -> CaseResult:
    """Run ``build()``; if it raises anything but transient I/O, quarantine the whole case.

    Parameters
    ----------
    build
        Builds the case and saves its result.
    source, case_id
        The case.
    file
        The file named by the record when the error itself names none (the CT of a scan, the
        study folder).
    root
        Source root (the record's file is relative to it).
    out
        Build root: the rejection is saved as the case's result (fingerprint empty, so the next
        build tries again), since tables are assembled from saved results.
    table
        Table the case was meant for (``scans``, ``series``).

    Returns
    -------
    CaseResult
        ``build()``'s result, or one with a single quarantine record and no rows.
    """
    try:
        return build()
    except Exception as e:
        if is_transient(e) or (isinstance(e, VerseEtlError) and not isinstance(e, InputError)):
            raise
        if (full := output_trouble(e)) is not None:
            raise output_error(full, out) from e
        error = e if isinstance(e, InputError) else unexpected(file, e, "building the case")
    result = rejected_case(source, case_id, error, root, table)
    write_text_atomic(case_result_path(out, source, case_id), result.to_json())
    return result


def rejected_case(
    source: str, case_id: str, error: InputError, root: Path, table: str
) -> CaseResult:
    """A case result holding only the quarantine record of ``error`` (no fingerprint)."""
    result = CaseResult(source=source, case_id=case_id, fingerprint="")
    result.flag_error(error, root, table=table)
    return result
