"""Helpers for tests that run the project's real DVC pipeline in a fresh git repository."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "verse-etl tests",
    "GIT_AUTHOR_EMAIL": "tests@verse-etl.invalid",
    "GIT_COMMITTER_NAME": "verse-etl tests",
    "GIT_COMMITTER_EMAIL": "tests@verse-etl.invalid",
}


def run(
    args: list[str], cwd: Path, extra_env: dict[str, str] | None = None, returncode: int = 0
) -> str:
    """Run a command in ``cwd`` with the venv first on PATH; fail the test with its output
    unless it exits with ``returncode``."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # No configured API unless the test passes one: each `dvc repro` then runs every stage on
    # one local server kept in the project's .prefect (flows/server.py).
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(cwd / ".prefect")
    env["PYTHONPATH"] = str(ROOT)
    env.update(GIT_IDENTITY)
    env.update(extra_env or {})
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == returncode, (
        f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout + proc.stderr


def make_project(repo: Path, verse_cases: int = 4, mosmed_studies: int = 1) -> Path:
    """A git + DVC repository holding the project's pipeline, set to a tiny sample."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("verse_etl", "verse_etl_sample", "schemas", "flows"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sample"].update(size="tiny", verse_cases=verse_cases, mosmed_studies=mosmed_studies)
    # These projects follow their sources: a scan removed from a source leaves the dataset, which
    # is pruning and must be asked for (verse_etl/publish/pruning.py).
    params["build"]["prune"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("/data/\n.prefect/\n__pycache__/\n")
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "config", "core.analytics", "false"], repo)
    return repo


def set_param(repo: Path, section: str, key: str, value: object) -> None:
    """Change one value of the project's params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stop_local_server(project: Path) -> None:
    """Stop the local Prefect server a project's stages started (instead of waiting for idle)."""
    import json
    import signal

    state = project / ".prefect" / "verse-etl-server.json"
    if state.exists():
        with contextlib.suppress(ProcessLookupError, ValueError, KeyError):
            os.kill(int(json.loads(state.read_text())["keeper_pid"]), signal.SIGTERM)


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` output says it ran."""
    return {
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    }
