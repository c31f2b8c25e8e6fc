"""The workspace lock: a second build waits or refuses; a killed holder never leaves it stuck."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verse_etl.errors import WorkspaceBusyError
from verse_etl.publish.lock import LOCK_NAME, workspace_lock

HOLD = """
import sys, time
from pathlib import Path
from verse_etl.publish.lock import workspace_lock
with workspace_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(out: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_build_refuses_naming_the_holder(tmp_path: Path) -> None:
    proc = _holder(tmp_path, 30)
    try:
        with (
            pytest.raises(
                WorkspaceBusyError,
                match=rf"another build is running on this workspace \(pid {proc.pid} ",
            ),
            workspace_lock(tmp_path),
        ):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_second_build_waits_for_the_first(tmp_path: Path) -> None:
    proc = _holder(tmp_path, 1.5)
    start = time.monotonic()
    with workspace_lock(tmp_path, timeout=60, poll=0.1):
        waited = time.monotonic() - start
    proc.wait()
    assert waited > 0.5


def test_sigkilled_holder_releases_the_lock(tmp_path: Path) -> None:
    proc = _holder(tmp_path, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the file stays, the lock does not
    with workspace_lock(tmp_path):
        pass


def test_report_waits_for_the_build_holding_the_workspace(tmp_path: Path) -> None:
    """`verse-etl report` reads tables and stores: it runs only holding the lock."""
    from typer.testing import CliRunner

    from verse_etl.cli import app

    holder = _holder(tmp_path, 30)
    try:
        result = CliRunner().invoke(app, ["report", "--out", str(tmp_path)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 3, result.output
    assert "another build is running" in " ".join(result.output.split())
    assert not (tmp_path / "report").exists()
