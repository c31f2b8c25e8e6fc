"""Push and pull through real DVC remotes (a folder, and S3 on a loopback moto server), a
consumer's fresh clone, and dataset releases with their notes."""

from __future__ import annotations

import os
import re
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
def built(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Path:
    """A built, committed project whose default remote is a local folder (built against the
    session's Prefect server, as with a configured PREFECT_API_URL)."""
    project = make_project(tmp_path_factory.mktemp("remotes") / "project")
    storage = project.parent / "storage"
    run(["dvc", "remote", "add", "-d", "local", str(storage)], project)
    run(["dvc", "repro"], project, {"PREFECT_API_URL": prefect_api})
    assert not (project / ".prefect" / "verse-etl-server.json").exists(), "started a server"
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
    # data/ is not in git: the metrics reach a consumer only through the DVC cache.
    assert (pulled / "metrics.json").read_bytes() == (build / "metrics.json").read_bytes()
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
    # A pulled checkout is what its dvc.lock says: no stage changed, no output missing.
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone)


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


def test_two_releases_have_correct_notes(built: Path, prefect_api: str) -> None:
    first = run(["verse-etl", "release", "v1"], built)
    assert "first release" in first
    # Nothing changed since v1: said plainly, no tag, exit 1.
    same = run(["verse-etl", "release", "v1-again"], built, returncode=1)
    assert "nothing to release" in same and "released as v1" in same, same
    assert run(["git", "tag", "--list"], built).split() == ["v1"]
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
    run(["dvc", "repro"], built, {"PREFECT_API_URL": prefect_api})
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
    notes print the same commands. Then issue 18's done-when: the light reader there opens a
    case of the tagged release, trains on patches and exports nnU-Net and NIfTI."""
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
    from verse_etl.dataset import Dataset, VolumesNotPulledError

    ds = Dataset(consumer, sources=("verse",))
    assert ds[0]["image"].size > 0
    # The MosMed stores were not fetched: the error says which `dvc get` brings them, and that
    # command, run as said (the README's remote option added), does.
    with pytest.raises(VolumesNotPulledError) as info:
        Dataset(consumer, sources=("mosmed",))[0]
    said = re.search(r"`(dvc get <repo> [^`]+)`", str(info.value))
    assert said, info.value
    get = said[1].replace("<repo>", str(built)).replace("<tag>", tag)
    run(["bash", "-euc", f"{get} --remote-config url={built}/.dvc-storage"], consumer)
    assert file_digests(consumer / "volumes" / "mosmed") == file_digests(
        producer / "volumes" / "mosmed"
    )
    assert Dataset(consumer, sources=("mosmed",))[0]["image"].size > 0

    # Done when: in that fresh folder, the light install (the build stack is not importable)
    # opens a case of the pulled release, feeds patches to a DataLoader and exports nnU-Net and
    # NIfTI; the exports hold the source files' voxels and affines.
    proc = subprocess.run(
        [sys.executable, "-c", LIGHT_READER, "verse-etl/data/build"],
        cwd=consumer,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every VerSe case of the release, two to a batch (the last one may hold one)
    found = re.search(r"cases (\d+) batches (\d+) x ", proc.stdout)
    assert found, proc.stdout
    cases, batches = int(found[1]), int(found[2])
    assert cases >= 2 and batches == -(-cases // 2), proc.stdout
    assert f"x ({min(cases, 2)}, 1, 32, 32, 32)" in proc.stdout, proc.stdout
    _assert_exports_are_the_sources(built, consumer)


LIGHT_READER = """
import importlib.abc, sys

BUILD_STACK = ("prefect", "prefect_dask", "dvc", "dask", "distributed", "pydicom", "nibabel",
               "pandera", "scipy", "isal")

class NotInstalled(importlib.abc.MetaPathFinder):
    # The light install: none of the build extra is there to import.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BUILD_STACK:
            raise ModuleNotFoundError(f"No module named {name!r} (light install)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
import torch
from verse_etl.cli import app
from verse_etl.dataset import Dataset, collate

build = sys.argv[1]
case = Dataset(build).case(0)
assert case.image[0, 0, 0] is not None and case.affine.shape == (4, 4)
train = Dataset(build, sources=("verse",), patch_size=(32, 32, 32), seed=1)
loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=collate, num_workers=1)
shapes = [tuple(b["image"].shape) for b in loader]
print(f"cases {len(train)} batches {len(shapes)} x {shapes[0]}")
for command in (["nnunet", "--dataset-id", "42"], ["nifti"]):
    try:
        app(["export", *command, "--build", build, "--out", f"export-{command[0]}"])
    except SystemExit as e:
        assert e.code in (0, None), (command, e.code)
"""


def _assert_exports_are_the_sources(producer: Path, consumer: Path) -> None:
    import nibabel as nib
    import numpy as np
    import pandas as pd

    scans = pd.read_parquet(producer / "data" / "build" / "tables" / "scans")
    sources = {p.name: p for p in (producer / "data" / "sample").rglob("*.nii.gz")}
    nnunet = consumer / "export-nnunet" / "Dataset042_VerSe"
    assert len(list((nnunet / "imagesTr").iterdir())) == len(scans)
    for row in scans.itertuples():
        ct = nib.load(sources[Path(row.ct_path).name])
        for exported in (
            consumer / "export-nifti" / "verse" / f"{row.scan_id}_ct.nii.gz",
            nnunet / "imagesTr" / f"{row.scan_id}_0000.nii.gz",
        ):
            got = nib.load(exported)
            np.testing.assert_array_equal(got.affine, ct.affine)
            np.testing.assert_array_equal(np.asanyarray(got.dataobj), np.asanyarray(ct.dataobj))
        mask = nib.load(sources[Path(row.mask_path).name])
        got = nib.load(consumer / "export-nifti" / "verse" / f"{row.scan_id}_msk.nii.gz")
        source = np.asanyarray(mask.dataobj).astype(np.uint8)
        np.testing.assert_array_equal(np.asanyarray(got.dataobj), source)
        labels = np.asanyarray(nib.load(nnunet / "labelsTr" / f"{row.scan_id}.nii.gz").dataobj)
        assert ((labels > 0) == (source > 0)).all()
