"""`dvc repro` on a real DVC repository runs the same code as the CLI; a rerun does nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.dvc_project import make_project, run, set_param, stages_run
from verse_etl.tables import read_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("repo") / "project")


def test_repro_builds_then_does_nothing_then_reruns_only_dependents(project: Path) -> None:
    first = run(["dvc", "repro"], project)
    assert stages_run(first) == {"sample", "ingest@verse", "ingest@mosmed", "tables", "report"}
    assert (project / "dvc.lock").exists()
    metrics = json.loads((project / "data" / "build" / "metrics.json").read_text())
    assert metrics["rows"]["scans"] == 4 and metrics["quarantined"] == 0
    assert "rows.scans" in run(["dvc", "metrics", "show"], project)

    second = run(["dvc", "repro"], project)
    assert stages_run(second) == set(), second
    assert "up to date" in run(["dvc", "status"], project)

    # A check mode only changes how the tables are validated: nothing is converted again (the
    # report follows the tables, whose dataset card names the mode).
    set_param(project, "checks", "default", "raise")
    assert stages_run(run(["dvc", "repro"], project)) == {"tables", "report"}

    # A volume parameter changes every store, not the sample.
    set_param(project, "volumes", "level", 5)
    third = run(["dvc", "repro"], project)
    assert stages_run(third) == {"ingest@verse", "ingest@mosmed", "tables", "report"}, third
    # VerSe: 4 scans rebuilt; the fracture-grades table (a saved result like a case) depends on
    # the spreadsheet and the graded scans' labels, not on the volumes, so it is reused.
    assert "5 cases (4 built, 1 unchanged)" in third and "1 cases (1 built, 0 unchanged)" in third

    before = json.loads((project / "data" / "build" / "metrics.json").read_text())
    # A changed VerSe source (one scan fewer) reruns VerSe ingestion and the tables only, and
    # ingestion converts nothing: the remaining scans are unchanged.
    copy = project / "verse-copy"
    shutil.copytree(project / "data" / "sample" / "verse", copy)
    for path in copy.rglob("sub-gl003*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    set_param(project, "sources", "verse", "verse-copy")
    fourth = run(["dvc", "repro"], project)
    assert stages_run(fourth) == {"ingest@verse", "tables", "report"}, fourth
    assert "pruning 1 case(s) no longer in verse-copy: gl003" in fourth
    assert "4 cases (0 built, 4 unchanged)" in fourth  # 3 scans + the grades (gl003 is not graded)
    metrics = json.loads((project / "data" / "build" / "metrics.json").read_text())
    assert metrics["rows"]["scans"] == 3
    # ingest@verse ran alone: every MosMed row is still there.
    assert metrics["rows"]["series"] == before["rows"]["series"] > 0
    # gl003's store stays until the next ingestion of VerSe: when ingest@verse ran, the published
    # tables still pointed at it, and the tables stage writes only tables/ (verse_etl.generations).
    stores = (project / "data" / "build" / "volumes" / "verse").glob("*.zarr")
    published = read_table(project / "data" / "build", "scans").column("store_path").to_pylist()
    assert not [p for p in published if "gl003" in p]
    assert len(published) == 3 and all((project / "data" / "build" / p).is_dir() for p in published)
    assert [p.name for p in stores if p.name.startswith("gl003.")]
    assert "up to date" in run(["dvc", "status"], project)
