"""The scheduled-release deployment registers on a real local `prefect server` (the session's
server), and a run triggered from it builds, releases and pushes the dataset."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.dvc_project import GIT_IDENTITY, ROOT, make_project, run
from tests.e2e.processes import background

pytestmark = pytest.mark.slow

FLOW, DEPLOYMENT = "verse-etl-scheduled-release", "nightly-test"


def _wait(check, what: str, seconds: float, proc: subprocess.Popen) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{what}: not ready after {seconds} s")


def test_deployment_registers_and_a_triggered_run_releases(
    tmp_path: Path, prefect_api: str
) -> None:
    project = make_project(tmp_path / "project")
    storage = tmp_path / "storage"
    run(["dvc", "remote", "add", "-d", "local", str(storage)], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "pipeline"], project)

    api = prefect_api
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    serve_args = [str(bin_dir / "verse-etl"), "serve", "--cron", "0 3 * * *", "--name", DEPLOYMENT]
    with background(serve_args, logs / "serve.log", env, project) as served:
        url = f"{api}/deployments/name/{FLOW}/{DEPLOYMENT}"
        deployment = _wait(
            lambda: (r := httpx.get(url, timeout=5)).status_code == 200 and r.json(),
            "deployment",
            180,
            served,
        )
        crons = [s["schedule"].get("cron") for s in deployment["schedules"]]
        assert crons == ["0 3 * * *"]
        trigger = subprocess.run(
            [str(bin_dir / "prefect"), "deployment", "run", f"{FLOW}/{DEPLOYMENT}", "--watch"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        output = trigger.stdout + trigger.stderr
        assert trigger.returncode == 0, output + (logs / "serve.log").read_text()
        assert "Completed" in output
        # The release notes are a markdown artifact of the run.
        notes = httpx.post(
            f"{api}/artifacts/latest/filter",
            json={"artifacts": {"key": {"any_": ["release-notes"]}}},
            timeout=30,
        ).json()
        assert len(notes) == 1 and notes[0]["type"] == "markdown", notes
        assert "first release" in notes[0]["data"], notes[0]["data"]

    tags = run(["git", "tag", "--list"], project).split()
    assert len(tags) == 1 and tags[0].startswith("v"), tags
    assert (project / "releases" / f"{tags[0]}.md").exists()
    assert any((project / "data" / "build" / "tables" / "scans").rglob("*.parquet"))
    assert any(storage.rglob("*")), "nothing was pushed to the remote"
