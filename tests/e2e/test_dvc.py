"""`dvc repro` on a real DVC repository runs the same code as the CLI; a rerun does nothing."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.dvc_project import make_project, run, set_param, stages_run, stop_local_server
from verse_etl.tables.parquet import read_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    project = make_project(tmp_path_factory.mktemp("repo") / "project")
    yield project
    stop_local_server(project)


def _prefect(args: list[str], project: Path, api: str) -> str:
    # Prefect's own CLI, as a user would run it; wide enough that rich does not cut names.
    return run(["prefect", *args], project, {"PREFECT_API_URL": api, "COLUMNS": "300"})


def _servers(project: Path) -> int:
    log = project / ".prefect" / "verse-etl-server.log"
    return log.read_text().count(" up in ") if log.exists() else 0


def repro(project: Path) -> str:
    """`dvc repro` without a configured API: its build runs on the local server (started by the
    build, or still running from the previous repro), never one per run."""
    before = _servers(project)
    output = run(["dvc", "repro"], project)
    assert _servers(project) - before <= 1, output
    return output


def _cases(output: str) -> str:
    """The case counts `verse-etl build` printed, e.g. ``cases: 5 (5 built, 0 unchanged)``."""
    (line,) = [line for line in output.splitlines() if line.startswith("cases: ")]
    return line.split(";")[0]


def test_repro_builds_then_does_nothing_then_reruns_only_dependents(project: Path) -> None:
    first = repro(project)
    # One stage runs the whole build flow (one Prefect import and flow run per `dvc repro`).
    assert stages_run(first) == {"sample", "build"}
    assert _cases(first) == "cases: 5 (5 built, 0 unchanged)", first
    # The build says what Prefect cost it (benchmarks/prefect_share.py adds these lines up);
    # the local server started from the migrated template, not by migrating.
    assert first.count("verse-etl prefect cost: ") == 1, first
    # The objects its imports made stay frozen to the exit (verse_etl/importing.py): nothing
    # that counts its objects at exit may be among them.
    assert "leaked" not in first, first
    assert "verse-etl prefect cost: build: " in first, first
    log = (project / ".prefect" / "verse-etl-server.log").read_text()
    assert "copied from the migrated template" in log, log
    # No API configured: the build started one local server, and Prefect's own CLI lists its
    # run, task runs and artifacts (fastapi pinned by Prefect).
    assert _servers(project) == 1
    api = json.loads((project / ".prefect" / "verse-etl-server.json").read_text())["url"]
    runs = _prefect(["flow-run", "ls"], project, api)
    assert "build -> data/build" in runs, runs
    task_runs = _prefect(["task-run", "ls"], project, api)
    for name in ("verse-gl003", "mosmed-", "tables", "report"):
        assert name in task_runs, task_runs
    # The UI (same server) is told where that API is, not Prefect's default port.
    with urllib.request.urlopen(f"{api.removesuffix('/api')}/ui-settings", timeout=30) as r:
        assert json.loads(r.read())["api_url"] == api
    artifacts = _prefect(["artifact", "ls"], project, api)
    for key in ("build-summary", "quarantine-by-check", "ingest-progress"):
        assert key in artifacts, artifacts
    assert (project / "dvc.lock").exists()
    pictures = sorted((project / "data" / "build" / "report" / "qc").glob("*.png"))
    assert len(pictures) == 5, pictures
    metrics = json.loads((project / "data" / "build" / "metrics.json").read_text())
    assert metrics["rows"]["scans"] == 4 and metrics["quarantined"] == 0
    assert "rows.scans" in run(["dvc", "metrics", "show"], project)

    second = repro(project)
    assert stages_run(second) == set(), second
    assert "up to date" in run(["dvc", "status"], project)

    # A check mode only changes how the tables are validated: nothing is converted again, and
    # the QC pictures (persisted with the report, keyed by what they show) are not redrawn.
    inodes = {p: p.stat().st_ino for p in pictures}
    set_param(project, "checks", "default", "raise")
    checked = repro(project)
    assert stages_run(checked) == {"build"}
    assert _cases(checked) == "cases: 5 (0 built, 5 unchanged)", checked
    assert {p: p.stat().st_ino for p in pictures} == inodes

    # A volume parameter changes every store, not the sample.
    set_param(project, "volumes", "level", 5)
    third = repro(project)
    assert stages_run(third) == {"build"}, third
    assert _cases(third) == "cases: 5 (5 built, 0 unchanged)", third

    before = json.loads((project / "data" / "build" / "metrics.json").read_text())
    # A changed VerSe source (one scan fewer) reruns the build, which converts nothing: the
    # remaining scans and the MosMed study are unchanged (reused by their keys).
    copy = project / "verse-copy"
    shutil.copytree(project / "data" / "sample" / "verse", copy)
    for path in copy.rglob("sub-gl003*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    set_param(project, "sources", "verse", "verse-copy")
    fourth = repro(project)
    assert stages_run(fourth) == {"build"}, fourth
    assert "pruning 1 case(s) no longer in verse-copy: gl003" in fourth
    assert _cases(fourth) == "cases: 4 (0 built, 4 unchanged)", fourth
    metrics = json.loads((project / "data" / "build" / "metrics.json").read_text())
    assert metrics["rows"]["scans"] == 3
    assert metrics["rows"]["series"] == before["rows"]["series"] > 0
    # gl003's store and QC picture are gone with it: the build deletes the stores the old tables
    # pointed at once the new ones are published (verse_etl.tables.generations).
    build = project / "data" / "build"
    stores = [p.name for p in (build / "volumes" / "verse").glob("*.zarr")]
    published = read_table(build, "scans").column("store_path").to_pylist()
    assert len(published) == 3 and all((build / p).is_dir() for p in published)
    assert not [p for p in published + stores if "gl003" in p], stores
    assert not list((build / "report" / "qc").glob("verse-gl003.*"))
    assert "up to date" in run(["dvc", "status"], project)
