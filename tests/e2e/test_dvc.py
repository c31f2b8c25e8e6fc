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
    """`dvc repro` without a configured API: all its Prefect stages share one local server
    (started by the first, or still running from the previous repro), never one per stage."""
    before = _servers(project)
    output = run(["dvc", "repro"], project)
    assert _servers(project) - before <= 1, output
    return output


def test_repro_builds_then_does_nothing_then_reruns_only_dependents(project: Path) -> None:
    first = repro(project)
    assert stages_run(first) == {"sample", "ingest@verse", "ingest@mosmed", "tables", "report"}
    # Each stage that runs a flow says what Prefect cost it (benchmarks/prefect_share.py adds
    # these up); the local server started from the migrated template, not by migrating.
    for stage in ("ingest verse", "ingest mosmed", "tables"):
        assert f"verse-etl prefect cost: {stage}: " in first, first
    log = (project / ".prefect" / "verse-etl-server.log").read_text()
    assert "copied from the migrated template" in log, log
    # No API configured: the first stage started one local server, the later stages reused it,
    # and Prefect's own CLI lists the runs and their artifacts (fastapi pinned by Prefect).
    assert _servers(project) == 1
    api = json.loads((project / ".prefect" / "verse-etl-server.json").read_text())["url"]
    runs = _prefect(["flow-run", "ls"], project, api)
    for name in ("ingest verse -> data/build", "ingest mosmed -> data/build", "tables ->"):
        assert name in runs, runs
    # The UI (same server) is told where that API is, not Prefect's default port.
    with urllib.request.urlopen(f"{api.removesuffix('/api')}/ui-settings", timeout=30) as r:
        assert json.loads(r.read())["api_url"] == api
    artifacts = _prefect(["artifact", "ls"], project, api)
    for key in ("build-summary", "quarantine-by-check", "ingest-progress"):
        assert key in artifacts, artifacts
    assert (project / "dvc.lock").exists()
    metrics = json.loads((project / "data" / "build" / "metrics.json").read_text())
    assert metrics["rows"]["scans"] == 4 and metrics["quarantined"] == 0
    assert "rows.scans" in run(["dvc", "metrics", "show"], project)

    second = repro(project)
    assert stages_run(second) == set(), second
    assert "up to date" in run(["dvc", "status"], project)

    # A check mode only changes how the tables are validated: nothing is converted again (the
    # report follows the tables, whose dataset card names the mode).
    set_param(project, "checks", "default", "raise")
    assert stages_run(repro(project)) == {"tables", "report"}

    # A volume parameter changes every store, not the sample.
    set_param(project, "volumes", "level", 5)
    third = repro(project)
    assert stages_run(third) == {"ingest@verse", "ingest@mosmed", "tables", "report"}, third
    # VerSe: 4 scans rebuilt; the fracture-grades table (a saved result like a case) depends on
    # the spreadsheet and the graded scans' labels, not on the volumes, so it is reused.
    assert "4 cases (4 built, 0 unchanged) + 1 source-level (_fracture_grades unchanged)" in third
    assert "1 cases (1 built, 0 unchanged)," in third

    before = json.loads((project / "data" / "build" / "metrics.json").read_text())
    # A changed VerSe source (one scan fewer) reruns VerSe ingestion and the tables only, and
    # ingestion converts nothing: the remaining scans are unchanged.
    copy = project / "verse-copy"
    shutil.copytree(project / "data" / "sample" / "verse", copy)
    for path in copy.rglob("sub-gl003*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    set_param(project, "sources", "verse", "verse-copy")
    fourth = repro(project)
    assert stages_run(fourth) == {"ingest@verse", "tables", "report"}, fourth
    assert "pruning 1 case(s) no longer in verse-copy: gl003" in fourth
    # 3 scans + the grades (gl003 is not graded)
    assert "3 cases (0 built, 3 unchanged) + 1 source-level (_fracture_grades unchanged)" in fourth
    metrics = json.loads((project / "data" / "build" / "metrics.json").read_text())
    assert metrics["rows"]["scans"] == 3
    # ingest@verse ran alone: every MosMed row is still there.
    assert metrics["rows"]["series"] == before["rows"]["series"] > 0
    # gl003's store stays until the next ingestion of VerSe: when ingest@verse ran, the published
    # tables still pointed at it, and the tables stage writes only tables/ (verse_etl.tables.generations).
    stores = (project / "data" / "build" / "volumes" / "verse").glob("*.zarr")
    published = read_table(project / "data" / "build", "scans").column("store_path").to_pylist()
    assert not [p for p in published if "gl003" in p]
    assert len(published) == 3 and all((project / "data" / "build" / p).is_dir() for p in published)
    assert [p.name for p in stores if p.name.startswith("gl003.")]
    assert "up to date" in run(["dvc", "status"], project)
