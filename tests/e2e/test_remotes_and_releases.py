"""Push and pull through real DVC remotes (a folder, and S3 on a loopback moto server), a
consumer's fresh clone, and dataset releases with their notes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.e2e.dvc_project import ROOT, make_project, run, set_param
from tests.e2e.s3_server import S3_ENV, boto_kwargs
from tests.file_digests import file_digests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built, committed project whose default remote is a local folder."""
    project = make_project(tmp_path_factory.mktemp("remotes") / "project")
    storage = project.parent / "storage"
    run(["dvc", "remote", "add", "-d", "local", str(storage)], project)
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "build"], project)
    return project


def _consumer(project: Path, name: str) -> Path:
    clone = project.parent / name
    run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    return clone


def _assert_same_outputs(project: Path, clone: Path) -> None:
    build, pulled = project / "data" / "build", clone / "data" / "build"
    for part in ("tables", "volumes"):
        assert file_digests(pulled / part) == file_digests(build / part), part
    assert file_digests(build / "tables"), "nothing was compared"
    con = duckdb.connect()
    tables = f"{pulled}/tables"
    scans = con.execute(f"SELECT count(*) FROM '{tables}/scans/*/*/*.parquet'").fetchone()[0]
    levels = con.execute(
        f"SELECT count(DISTINCT level) FROM '{tables}/vertebrae/*/*/*.parquet' WHERE in_mask"
    ).fetchone()[0]
    assert scans == 4 and levels > 5


def test_folder_remote_push_then_fresh_clone_pull_is_byte_identical(built: Path) -> None:
    run(["dvc", "push"], built)
    clone = _consumer(built, "consumer-folder")
    run(["dvc", "pull"], clone)
    _assert_same_outputs(built, clone)


def test_s3_remote_push_then_fresh_clone_pull_is_byte_identical(
    built: Path, s3_endpoint: str
) -> None:
    run(["dvc", "remote", "add", "s3", "s3://verse-etl/datasets"], built)
    run(["dvc", "remote", "modify", "s3", "endpointurl", s3_endpoint], built)
    run(["git", "add", ".dvc/config"], built)
    run(["git", "commit", "-q", "-m", "s3 remote"], built)
    run(["dvc", "push", "-r", "s3"], built, S3_ENV)

    import boto3

    listed = boto3.client("s3", endpoint_url=s3_endpoint, **boto_kwargs()).list_objects_v2(
        Bucket="verse-etl", Prefix="datasets/"
    )
    assert listed["KeyCount"] > 10

    clone = _consumer(built, "consumer-s3")
    run(["dvc", "pull", "-r", "s3"], clone, S3_ENV)
    _assert_same_outputs(built, clone)


def test_two_releases_have_correct_notes(built: Path) -> None:
    first = run(["verse-etl", "release", "v1"], built)
    assert "first release" in first
    assert (
        "added (4): gl003, verse201, verse253, verse506"
        in (built / "releases" / "v1.md").read_text()
    )

    # The next version: one scan removed, one scan's centroids edited, one scan's CT truncated
    # (quarantined), one MosMed study unchanged.
    source = built / "verse-v2"
    shutil.copytree(built / "data" / "sample" / "verse", source)
    for path in source.rglob("sub-gl003*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (ctd,) = source.rglob("sub-verse506*_ctd.json")
    ctd.write_text(ctd.read_text().replace('"X": ', '"X": 1', 1))
    (ct,) = source.rglob("sub-verse401_split-verse253_ct.nii.gz")
    ct.write_bytes(ct.read_bytes()[: len(ct.read_bytes()) // 2])
    set_param(built, "sources", "verse", "verse-v2")
    run(["dvc", "repro"], built)
    run(["verse-etl", "release", "v2"], built)

    notes = (built / "releases" / "v2.md").read_text()
    assert "Changes since v1." in notes
    assert "- added (0): none" in notes
    assert "- changed (1): verse506" in notes
    assert "- removed (2): gl003, verse253" in notes
    assert "| read | 0 | 1 | +1 |" in notes
    assert run(["git", "tag", "--list"], built).split() == ["v1", "v2"]
    # The tag pins exactly this build: dvc.lock at v2 is the workspace's.
    assert (
        run(["git", "show", "v2:dvc.lock"], built).strip()
        == (built / "dvc.lock").read_text().strip()
    )


def _readme_consumer_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- consumer commands:", 1)[1].split("```bash\n", 1)[1]
    return block.split("```", 1)[0].strip().splitlines()


def test_readme_consumer_commands_get_a_release_elsewhere_byte_identical(built: Path) -> None:
    """With the project's own default remote (a folder relative to each clone), the README's
    consumer commands, run verbatim in a fresh folder, give the producer's bytes; the release
    notes print the same commands."""
    shutil.copy(ROOT / ".dvc" / "config", built / ".dvc" / "config")
    run(["git", "add", ".dvc/config"], built)
    run(["git", "commit", "-q", "-m", "the project's default remote"], built)
    tag = "v-consumers"
    run(["verse-etl", "release", tag, "--push"], built)
    commands = [
        line.replace("<producer>", str(built)).replace("<tag>", tag)
        for line in _readme_consumer_commands()
    ]
    notes = (built / "releases" / f"{tag}.md").read_text()
    assert "## Get this release" in notes and "clone-relative folder" in notes
    assert "```bash\n" + "\n".join(commands) + "\n```" in notes

    # Without the README's `dvc remote modify --local` step a clone looks for the storage inside
    # itself and cannot pull.
    bare = _consumer(built, "consumer-bare")
    venv = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["dvc", "pull"], cwd=bare, capture_output=True, text=True, env={**os.environ, **venv}
    )
    assert proc.returncode != 0, proc.stdout

    consumer = built.parent / "consumer-readme"
    consumer.mkdir()
    run(["bash", "-euc", "\n".join(commands)], consumer)
    producer = built / "data" / "build"
    for got, want in (
        (consumer / "verse-etl" / "data" / "build" / "tables", producer / "tables"),
        (consumer / "verse-etl" / "data" / "build" / "volumes", producer / "volumes"),
        (consumer / "tables", producer / "tables"),
        (consumer / "volumes" / "verse", producer / "volumes" / "verse"),
        (consumer / "project" / "tables", producer / "tables"),
    ):
        assert file_digests(want), want
        assert file_digests(got) == file_digests(want), got
    assert (consumer / "project" / "tables.dvc").is_file()
    # What `dvc get` filled reads like a build folder.
    from verse_etl.dataset import Dataset

    ds = Dataset(consumer, sources=("verse",))
    assert ds[0]["image"].size > 0
