"""`dvc repro` on a real DVC repository runs the same code as the CLI; a rerun does nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PREFECT_HOME"] = str(cwd / ".prefect")
    env["PYTHONPATH"] = str(cwd)  # run the copy of the code that DVC hashes as deps
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh git + DVC repository holding the project's pipeline, on a tiny sample."""
    repo = tmp_path_factory.mktemp("repo")
    for name in ("verse_etl", "schemas", "flows"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sample"].update(size="tiny", verse_cases=4, mosmed_studies=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["dvc", "config", "core.analytics", "false"], repo)
    return repo


def test_repro_builds_then_does_nothing_then_reruns_only_dependents(project: Path) -> None:
    first = _run(["dvc", "repro"], project)
    assert "Running stage 'sample'" in first and "Running stage 'build'" in first
    assert (project / "data" / "build" / "tables" / "scans.parquet").exists()
    assert (project / "dvc.lock").exists()

    second = _run(["dvc", "repro"], project)
    assert "Running stage" not in second, second
    assert "up to date" in _run(["dvc", "status"], project)

    # A volume parameter changes the build, not the sample.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["volumes"]["level"] = 5
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run(["dvc", "repro"], project)
    assert "Running stage 'build'" in third and "Running stage 'sample'" not in third
