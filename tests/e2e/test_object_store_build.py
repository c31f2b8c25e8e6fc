"""A build whose stores and tables go to S3 (a real moto server on loopback), run by Prefect on
the Dask runner with two worker processes: the same bytes as a local build, readable in place,
incremental from what is on S3, and pruned when a case goes away."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import s3fs
import zarr
from typer.testing import CliRunner

from tests.e2e.s3_server import BUCKET, S3_ENV
from tests.file_digests import file_digests
from verse_etl.cli import app
from verse_etl.params import BuildParams, SourceParams
from verse_etl.stores.volumes import IMAGE_PATH, LABELS_PATH
from verse_etl.tables.parquet import read_table
from verse_etl.targets import POINTER_NAME
from verse_etl_sample import write_sample

pytestmark = pytest.mark.slow

PREFIX = f"{BUCKET}/builds/tiny"


def _generation(fs: s3fs.S3FileSystem) -> str:
    """The generation the build's pointer names."""
    return json.loads(fs.cat_file(f"{PREFIX}/{POINTER_NAME}"))["generation"]


def _s3_digests(fs: s3fs.S3FileSystem) -> dict[str, str]:
    """Digests of the published tables (the generation the pointer names) and of the stores,
    keyed as in a local build."""
    fs.invalidate_cache()
    tables = f"{PREFIX}/generations/{_generation(fs)}"
    return {
        name.removeprefix(f"{root}/"): hashlib.sha256(fs.cat_file(name)).hexdigest()
        for root, part in ((tables, "tables"), (PREFIX, "volumes"))
        for name in sorted(fs.find(f"{root}/{part}"))
    }


@pytest.fixture(scope="module")
def s3(s3_endpoint: str):
    """The AWS environment pointing at the loopback server (inherited by Dask's workers)."""
    patch = pytest.MonkeyPatch()
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        patch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    patch.undo()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def built(s3, prefect_server, tmp_path_factory: pytest.TempPathFactory):
    from verse_etl.flows.build import run_build

    root = tmp_path_factory.mktemp("object-store")
    src, local = root / "src", root / "local"
    manifest = write_sample(src, seed=11, verse_cases=4, mosmed_studies=1, size="tiny")
    params = BuildParams(
        out=f"s3://{PREFIX}",
        work=str(root / "work"),
        workers=2,
        sources=SourceParams(verse=str(src / "verse"), mosmed=str(src / "mosmed")),
    )
    summary = run_build(params, runner="dask")
    run_build(replace(params, out=str(local)))  # the reference: the same build, on local disk
    return params, summary, manifest, src, local


def test_build_on_dask_writes_to_s3_exactly_what_a_local_build_writes(built, s3) -> None:
    params, summary, _, _, local = built
    assert summary.converted == summary.cases and summary.stores_written > 0
    on_s3 = _s3_digests(s3)
    assert on_s3 == file_digests(local, ("tables", "volumes"))
    assert any(k.startswith("volumes/verse/") for k in on_s3), "no store was published"
    assert s3.exists(f"{PREFIX}/metrics.json")
    # One generation, the one the pointer names; no table objects outside it.
    assert [p.rsplit("/", 1)[-1] for p in s3.ls(f"{PREFIX}/generations")] == [_generation(s3)]
    assert not s3.exists(f"{PREFIX}/tables")
    # Each case's local copy was cleared once uploaded: a worker's disk holds one case at a time.
    assert not list((Path(params.work) / "volumes").rglob("*.zarr"))


def test_stores_and_tables_on_s3_read_in_place(built, s3, s3_endpoint: str) -> None:
    _, _, manifest, _, local = built
    scan = manifest.verse[0]
    scans = read_table(local, "scans").to_pandas().set_index("scan_id")
    store_path = scans.loc[scan.scan_id, "store_path"]  # volumes/verse/<id>.<case key>.zarr
    store = zarr.open_group(
        f"s3://{PREFIX}/{store_path}",
        mode="r",
        storage_options={"endpoint_url": s3_endpoint},
    )
    reference = zarr.open_group(local / store_path, mode="r")
    for path in (IMAGE_PATH, LABELS_PATH):
        np.testing.assert_array_equal(store[path][...], reference[path][...])
    assert store.attrs.asdict() == reference.attrs.asdict()
    for name in ("scans", "vertebrae", "series", "quarantine"):
        assert read_table(PREFIX, name, filesystem=s3).equals(read_table(local, name)), name
    # The Dataset finds the tables through the pointer too (there is no <prefix>/tables).
    from verse_etl.dataset import Dataset

    remote_ds = Dataset(f"s3://{PREFIX}", storage_options={"endpoint_url": s3_endpoint})
    assert remote_ds.ids and remote_ds.ids == Dataset(local).ids
    # The catalog reads the published build in place too (DuckDB through fsspec).
    sql = "SELECT release, count(*) AS n FROM scans GROUP BY ALL ORDER BY ALL"
    remote = CliRunner().invoke(app, ["query", sql, "--out", f"s3://{PREFIX}", "--format", "csv"])
    assert remote.exit_code == 0, remote.output
    assert (
        remote.output
        == CliRunner().invoke(app, ["query", sql, "--out", str(local), "--format", "csv"]).output
    )
    assert len(remote.output.splitlines()) == 1 + len({s.release for s in manifest.verse})


def test_rerun_reuses_what_is_on_s3_and_prunes_a_removed_case(built, s3) -> None:
    from verse_etl.flows.build import run_build

    params, first, manifest, src, _ = built
    again = run_build(params)  # threads this time: the runner does not matter to the cache
    assert again.converted == 0 and again.reused == first.cases and again.stores_written == 0

    gone = manifest.verse[-1]  # a subject of its own: remove its folders from the source
    assert gone.scan_id == (src / gone.ct).parent.name.removeprefix("sub-")
    shutil.rmtree((src / gone.ct).parent)
    shutil.rmtree((src / gone.mask).parent)
    third = run_build(replace(params, workers=1, prune=True))  # pruning is asked for
    assert third.pruning["verse"].startswith(f"pruning 1 case(s) no longer in {src}")
    s3.invalidate_cache()
    assert not s3.glob(f"{PREFIX}/volumes/verse/{gone.scan_id}.*zarr")
    assert not s3.exists(f"{PREFIX}/cases/verse/{gone.scan_id}.json")
    assert third.rows["scans"] == first.rows["scans"] - 1
    ids = read_table(PREFIX, "scans", filesystem=s3).column("scan_id").to_pylist()
    assert gone.scan_id not in ids and len(ids) == first.rows["scans"] - 1
