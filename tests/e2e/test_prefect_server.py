"""The local Prefect server a build starts when no API is configured: shared, and never left
behind by a killed build; `serve` refuses without a persistent API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.e2e.dvc_project import ROOT
from tests.e2e.processes import free_port
from verse_etl.cli import app

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: reap it if it is ours, else read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not after {seconds} s")


def test_sigkilled_build_leaves_no_prefect_server_behind(tmp_path: Path) -> None:
    from verse_etl_sample import write_sample

    write_sample(tmp_path / "src", seed=2, verse_cases=4, mosmed_studies=1, size="tiny")
    home = tmp_path / "prefect-home"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "VERSE_ETL_PREFECT_IDLE_SECONDS": "3",
    }
    env.pop("PREFECT_API_URL", None)
    verse_etl = str(Path(sys.executable).parent / "verse-etl")
    args = [verse_etl, "build", "--verse", str(tmp_path / "src" / "verse")]
    args += ["--mosmed", str(tmp_path / "src" / "mosmed"), "--out", str(tmp_path / "build")]
    build = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        lease = home / "verse-etl-server.clients" / str(build.pid)
        _wait(lambda: lease.exists() or build.poll() is not None, 300, "the build's lease")
        assert build.poll() is None, "the build ended before it could be killed"
        state = json.loads((home / "verse-etl-server.json").read_text())
        build.send_signal(signal.SIGKILL)
        build.wait()
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    # Killed without a chance to clean up: the keeper sees its lease's pid gone and stops the
    # server once idle.
    _wait(lambda: not _alive(state["server_pid"]), 90, "server stopped")
    _wait(lambda: not _alive(state["keeper_pid"]), 30, "keeper ended")
    assert not (home / "verse-etl-server.json").exists()
    log = (home / "verse-etl-server.log").read_text()
    assert "stopped" in log
    # The queries that warm a new server before it is announced reached real endpoints.
    assert "5 of 5 warm-up requests answered" in log


@pytest.mark.parametrize("api", [None, "unreachable"])
def test_serve_refuses_without_a_persistent_api(api: str | None, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = f"http://127.0.0.1:{free_port()}/api" if api else None
    with temporary_settings(updates={PREFECT_API_URL: url}):
        result = CliRunner().invoke(app, ["serve", "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "prefect server start" in message and "PREFECT_API_URL" in message
    assert ("does not answer" if api else "not set") in message
    assert "being served" not in message


def test_the_users_prefect_home_and_profile_are_respected(tmp_path: Path) -> None:
    # A user's own home whose active profile points at their team server: the build reports
    # there (no local server); without PREFECT_HOME the local server lives in the project.
    home = tmp_path / "user-prefect"
    home.mkdir()
    (home / "profiles.toml").write_text(
        'active = "team"\n\n[profiles.team]\nPREFECT_API_URL = "http://team.invalid:4200/api"\n'
    )
    probe = "from verse_etl.flows.server import configured_api, local_home; print(configured_api(), local_home())"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    with_home = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert with_home.stdout.split() == ["http://team.invalid:4200/api", str(home)], with_home.stderr
    assert not (tmp_path / ".prefect").exists()
    project = tmp_path / "project"
    project.mkdir()
    without = subprocess.run(
        [
            sys.executable,
            "-c",
            "from verse_etl.flows.server import local_home; print(local_home())",
        ],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert without.stdout.strip() == str(project / ".prefect"), without.stderr
