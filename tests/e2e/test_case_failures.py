"""A case task that still fails after its retries costs that case only (real Prefect futures)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from verse_etl.cases.outputs import load_case_results
from verse_etl.errors import OutputError


def test_a_failed_case_task_is_quarantined_and_the_build_error_is_raised(
    prefect_server, tmp_path: Path
) -> None:
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner
    from verse_etl.flows.build import _Case

    root, out = tmp_path / "src", tmp_path / "out"
    attempts: list[int] = []

    @task(retries=1, retry_delay_seconds=0, retry_condition_fn=_retry_condition())
    def flaky_case() -> None:
        attempts.append(1)
        raise OSError(errno.EIO, "Input/output error")

    @task
    def full_disk() -> None:
        raise OutputError(f"{out}/volumes: cannot write (No space left on device)")

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def cases() -> tuple:
        failed = _Case(flaky_case.submit(), "mosmed", "study", root / "dicom" / "study", root)
        result = failed.result(out, 0)
        stopped = _Case(full_disk.submit(), "verse", "v1", root / "v1.nii.gz", root)
        with pytest.raises(OutputError):
            stopped.result(out, 0)
        return result

    result = cases()
    assert len(attempts) == 2  # transient I/O was retried once, then given up
    (record,) = result.quarantine
    assert (record.case_id, record.file, record.check) == (
        "study",
        "dicom/study",
        "io_retries_exhausted",
    )
    assert "Input/output error" in record.reason and record.table == "series"
    (saved,) = load_case_results(out, ("mosmed",))  # the tables step will see it
    assert saved.quarantine == [record]
    assert not load_case_results(out, ("verse",))


def _retry_condition():  # type: ignore[no-untyped-def]
    from verse_etl.flows.build import _transient

    return _transient
