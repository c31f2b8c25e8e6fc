"""A fresh project gets the data as the README's "Get the data" section says (run line by line
against the loopback mirror), builds it, and releases it: dvc.lock and the release notes name
the raw bytes the build read."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo
from typer.testing import CliRunner

from tests.e2e.library_build import build_sources
from tests.http_server import Served
from tests.source_standins import new_dvc_project
from verse_etl.cli import app
from verse_etl.params import load_params
from verse_etl.publish.release import release
from verse_etl.report.page import write_report
from verse_etl.sources.catalog import ENTRIES
from verse_etl.sources.dvc_imports import dvc_file_of, read_import

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def readme_get_the_data() -> tuple[list[list[str]], dict]:
    """The commands of the README's "Get the data" section and its params.yaml snippet."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Get the data\n", 1)[1].split("\n## ", 1)[0]
    (commands,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    (params,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    lines = [shlex.split(line, comments=True) for line in commands.splitlines()]
    return [argv for argv in lines if argv], yaml.safe_load(params)


def merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict):
            merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


def test_readme_get_the_data_then_build_and_release_names_the_raw_sources(
    tmp_path: Path,
    catalog_mirror: Served,
    catalog_sample: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = new_dvc_project(tmp_path / "project")
    for name in ("verse_etl", "verse_etl_sample", "schemas", "flows"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # The sample stage's output is the session's sample (same parameters): copied, not redrawn.
    params["sample"].update(size="tiny", seed=3, verse_cases=4, mosmed_studies=2)
    # The manual MosMed step: the studies placed where the README says.
    shutil.copytree(catalog_sample / "mosmed" / "dicom", project / "raw" / "mosmed" / "dicom")

    commands, snippet = readme_get_the_data()
    assert [argv[:2] for argv in commands] == [["verse-etl", "fetch"]] * len(commands)
    merge(params, snippet)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(project)
    monkeypatch.setenv("VERSE_ETL_FETCH_BASE_URL", catalog_mirror.base_url)
    outputs = []
    for argv in commands:
        result = CliRunner().invoke(app, argv[1:])
        assert result.exit_code == 0, f"{shlex.join(argv)}:\n{result.output}"
        outputs.append(result.output)
    assert "no upstream change" in outputs[2] and "MosMed images complete" in outputs[3]
    again = CliRunner().invoke(app, ["fetch"])
    assert again.exit_code == 0 and "nothing to fetch" in again.output

    # Build what was fetched (the library calls of the flow's tasks), then let DVC record it.
    shutil.copytree(catalog_sample, project / "data" / "sample")
    summary = build_sources(load_params(project / "params.yaml").build)
    assert summary.rows["scans"] == 4 and summary.rows["verse_fracture_grades"] > 0
    assert summary.rows["series"] >= 2 and summary.rows["mosmed_vertebrae"] > 0
    write_report(project / "data" / "build")
    with Repo(str(project)) as repo:
        repo.commit(force=True)
        with repo.config.edit() as conf:  # the team remote, committed with the project
            conf["remote"]["team"] = {"url": str(tmp_path / "remote")}
            conf["core"]["remote"] = "team"
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "fetched"],
        cwd=project,
        check=True,
    )
    notes = release(project, "v1", "data/build").to_markdown()

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    deps = {d["path"]: d for stage in lock["stages"].values() for d in stage.get("deps", [])}
    assert deps["raw/verse"]["md5"].endswith(".dir") and deps["raw/mosmed"]["md5"].endswith(".dir")
    tagged = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "v1"], cwd=project, capture_output=True, text=True
    ).stdout.split()
    for entry in ENTRIES:
        record = read_import(dvc_file_of(project / "raw" / entry.dest))
        assert record is not None and str(dvc_file_of(Path("raw") / entry.dest)) in tagged
        row = f"| raw/{entry.dest} | {record.url} | {record.etag} | {record.size} | {record.md5} | {record.sha256} |"
        assert row in notes, entry.name
    # A consumer of the release gets the raw bytes through the DVC remote, not the publishers.
    with Repo(str(project)) as repo:
        repo.push(targets=[str(project / "raw")], recursive=True)
    clone = tmp_path / "consumer"
    subprocess.run(["git", "clone", "-q", "--branch", "v1", str(project), str(clone)], check=True)
    with Repo(str(clone)) as repo:
        repo.pull(targets=[str(clone / "raw")], recursive=True)
    for entry in ENTRIES:
        pulled = (clone / "raw" / entry.dest).read_bytes()
        assert pulled == (project / "raw" / entry.dest).read_bytes(), entry.name
    # dvc.lock pins the fetched bytes: other bytes under an imported name change the build stage
    zip_path = project / "raw" / "verse" / "dataset-verse19test.zip"
    kept = zip_path.read_bytes()
    zip_path.write_bytes(kept + b"\0")
    with Repo(str(project)) as repo:
        changed = repo.status(targets=["build"])
    assert {"changed deps": {"raw/verse": "modified"}} in changed["build"]
