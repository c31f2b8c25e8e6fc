"""A case is a sealed unit: whatever it throws stays in the case; only transient I/O is retried."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from prefect.states import Failed
from prefect.task_engine import TaskRunTimeoutError
from verse_etl.flows.build import _transient

from tests.dicom_factory import write_series
from verse_etl.cases.outputs import load_case_results
from verse_etl.cases.records import CaseResult
from verse_etl.cases.seal import seal_case
from verse_etl.errors import InputError, OutputError, is_transient
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import VolumeParams
from verse_etl.paths import case_result_path
from verse_etl.sources.mosmed import discover_mosmed

VOLUMES = VolumeParams(chunks=(16, 16, 16), shard_chunks=(1, 1, 1), pyramid_levels=0)


def _raise(error: BaseException):  # type: ignore[no-untyped-def]
    def build() -> CaseResult:
        raise error

    return build


@pytest.mark.parametrize(
    ("error", "check"),
    [
        (
            RecursionError("maximum recursion depth exceeded while decoding a JSON array"),
            "too_deep",
        ),
        (OverflowError("cannot convert float infinity to integer"), "value_overflow"),
        (MemoryError(), "too_large"),
        (TypeError("unsupported operand type(s)"), "unexpected_error"),
        (OSError(errno.EINVAL, "Invalid argument"), "unexpected_error"),
    ],
)
def test_an_unexpected_error_becomes_one_saved_record_of_the_case(
    tmp_path: Path, error: BaseException, check: str
) -> None:
    root = tmp_path / "src"
    file = root / "dicom" / "study"
    result = seal_case(_raise(error), "mosmed", "study", file, root, tmp_path / "out", "series")
    (record,) = result.quarantine
    assert (record.case_id, record.file, record.check, record.table) == (
        "study",
        "dicom/study",
        check,
        "series",
    )
    assert record.reason.startswith("dicom/study: building the case failed (")
    assert type(error).__name__ in record.reason and "\n" not in record.reason
    assert not result.rows and result.fingerprint == ""  # the next build tries again
    (saved,) = load_case_results(tmp_path / "out", ("mosmed",))
    assert saved.quarantine == result.quarantine


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.ESTALE, "Stale file handle"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        TimeoutError("read timed out"),
    ],
)
def test_transient_io_is_left_to_the_retries(tmp_path: Path, error: BaseException) -> None:
    with pytest.raises(type(error)):
        seal_case(_raise(error), "verse", "v1", tmp_path / "ct", tmp_path, tmp_path, "scans")
    assert not (tmp_path / "cases").exists()


def test_a_full_disk_stops_the_build_with_one_line_naming_the_path(tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x.tmp"))
    with pytest.raises(OutputError) as caught:
        seal_case(_raise(full), "verse", "v1", tmp_path / "ct", tmp_path, tmp_path, "scans")
    assert str(caught.value) == (
        f"{tmp_path}/out/x.tmp: cannot write (No space left on device); free space on that "
        "disk or build elsewhere"
    )


def _state(error: BaseException) -> Failed:
    return Failed(data=error)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RecursionError("maximum recursion depth exceeded"), False),
        (OverflowError("cannot convert float infinity to integer"), False),
        (TypeError("bad operand"), False),
        (MemoryError(), False),
        (ValueError("Unable to decode the pixel data"), False),
        (InputError("x.nii.gz", "not gzip"), False),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (TaskRunTimeoutError("over the limit"), False),
        (OSError(errno.EIO, "Input/output error"), True),
        (ConnectionError("connection dropped"), True),
        (TimeoutError("read timed out"), True),
    ],
)
def test_the_task_retries_only_transient_io(error: BaseException, retried: bool) -> None:
    assert _transient(None, None, _state(error)) is retried


def test_an_input_error_caused_by_transient_io_is_retried() -> None:
    try:
        try:
            raise OSError(errno.ETIMEDOUT, "Connection timed out")
        except OSError as e:
            raise InputError("ct.nii.gz", f"cannot open ({e})") from e
    except InputError as wrapped:
        assert is_transient(wrapped)
        assert _transient(None, None, _state(wrapped))


def _study(root: Path, name: str) -> list[Path]:
    volume = np.arange(8 * 8 * 4, dtype=np.int16).reshape(8, 8, 4)
    return write_series(root / "dicom" / name, volume)


def test_a_header_value_that_overflows_quarantines_the_file_not_the_build(tmp_path: Path) -> None:
    """IS '1e9999' in InstanceNumber raised OverflowError out of the whole build."""
    root = tmp_path / "src"
    files = _study(root, "overflow")
    _study(root, "good")
    raw = files[1].read_bytes()
    assert raw.count(b"IS\x02\x002 ") == 1  # InstanceNumber "2", padded to even length
    files[1].write_bytes(raw.replace(b"IS\x02\x002 ", b"IS\x06\x001e9999"))
    studies = {s.folder: s for s in discover_mosmed(root)}
    bad = build_mosmed_study(studies["overflow"], root, tmp_path / "out", VOLUMES)
    good = build_mosmed_study(studies["good"], root, tmp_path / "out", VOLUMES)
    name = files[1].relative_to(root).as_posix()
    record = next(q for q in bad.quarantine if q.file == name)
    assert record.check == "dicom_header" and "OverflowError" in record.reason
    assert [r["is_volume"] for r in good.rows["series"]] == [True]


def test_deeply_nested_annotation_json_is_quarantined_by_file(tmp_path: Path) -> None:
    """A RecursionError from json.loads escaped the case."""
    root = tmp_path / "src"
    _study(root, "deep")
    (root / "annotation").mkdir()
    (root / "annotation" / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (study,) = discover_mosmed(root)
    result = build_mosmed_study(study, root, tmp_path / "out", VOLUMES)
    records = [q for q in result.quarantine if q.file == "annotation/deep.json"]
    assert records and records[0].check in {"too_deep", "annotation_json"}, records
    assert result.rows["series"][0]["is_volume"]
    json.loads(result.to_json())


def test_disk_full_while_saving_a_case_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ENOSPC from the kernel (/dev/full), where the case result is being written: its
    temporary file is opened on /dev/full (a link planted under the name is not followed)."""
    root, out = tmp_path / "src", tmp_path / "out"
    _study(root, "good")
    (study,) = discover_mosmed(root)
    cache = case_result_path(out, "mosmed", "good")
    temporary = str(cache.with_name(f"{cache.name}.tmp-{os.getpid()}"))
    real_open = os.open

    def open_full(path: object, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if str(path) == temporary:
            return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, mode, **kwargs)  # type: ignore[arg-type]  # os.open's own arguments

    monkeypatch.setattr(os, "open", open_full)
    with pytest.raises(OutputError) as caught:
        build_mosmed_study(study, root, out, VOLUMES)
    assert str(caught.value).startswith(f"{cache}: cannot write (No space left on device)")
    assert "\n" not in str(caught.value)
