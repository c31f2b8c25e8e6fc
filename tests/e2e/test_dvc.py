"""`dvc repro` on a real DVC repository runs the same code as the CLI; a rerun does nothing."""

from __future__ import annotations

import json
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


def _stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def _set_param(project: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_builds_then_does_nothing_then_reruns_only_dependents(project: Path) -> None:
    first = _run(["dvc", "repro"], project)
    assert _stages_run(first) == {"sample", "ingest@verse", "ingest@mosmed", "tables"}
    assert (project / "data" / "build" / "tables" / "scans.parquet").exists()
    assert (project / "dvc.lock").exists()
    metrics = json.loads((project / "data" / "build" / "metrics.json").read_text())
    assert metrics["rows"]["scans"] == 4 and metrics["quarantined"] == 0
    assert "rows.scans" in _run(["dvc", "metrics", "show"], project)

    second = _run(["dvc", "repro"], project)
    assert _stages_run(second) == set(), second
    assert "up to date" in _run(["dvc", "status"], project)

    # A check mode only changes how the tables are validated: nothing is converted again.
    _set_param(project, "checks", "default", "raise")
    assert _stages_run(_run(["dvc", "repro"], project)) == {"tables"}

    # A volume parameter changes every store, not the sample.
    _set_param(project, "volumes", "level", 5)
    third = _run(["dvc", "repro"], project)
    assert _stages_run(third) == {"ingest@verse", "ingest@mosmed", "tables"}, third
    assert "4 cases (4 built, 0 unchanged)" in third and "1 cases (1 built, 0 unchanged)" in third

    # A changed VerSe source (one scan fewer) reruns VerSe ingestion and the tables only, and
    # ingestion converts nothing: the remaining scans are unchanged.
    copy = project / "verse-copy"
    shutil.copytree(project / "data" / "sample" / "verse", copy)
    for path in copy.rglob("sub-gl003*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    _set_param(project, "sources", "verse", "verse-copy")
    fourth = _run(["dvc", "repro"], project)
    assert _stages_run(fourth) == {"ingest@verse", "tables"}, fourth
    assert "3 cases (0 built, 3 unchanged)" in fourth
    metrics = json.loads((project / "data" / "build" / "metrics.json").read_text())
    assert metrics["rows"]["scans"] == 3
    assert not (project / "data" / "build" / "volumes" / "verse" / "gl003.zarr").exists()
