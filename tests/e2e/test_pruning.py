"""Nothing is deleted because it was left out: a source not given, a missing or emptied folder,
or a source that lost too many cases keeps its outputs; pruning happens only when asked, and
names what it removes."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.file_digests import file_digests
from verse_etl.params import BuildParams, SourceParams, VolumeParams
from verse_etl.paths import case_result_name
from verse_etl.publish.pruning import decide_pruning
from verse_etl.tables.parquet import read_frame

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(prefect_server, tmp_path_factory: pytest.TempPathFactory):
    from verse_etl.flows.build import run_build

    from verse_etl_sample import write_sample

    src = tmp_path_factory.mktemp("prune-src")
    manifest = write_sample(src, seed=11, verse_cases=4, mosmed_studies=1, size="tiny")
    out = tmp_path_factory.mktemp("prune-build")
    params = BuildParams(
        out=str(out),
        sources=SourceParams(verse=str(src / "verse"), mosmed=str(src / "mosmed")),
        volumes=VolumeParams(chunks=(16, 16, 16), shard_chunks=(1, 1, 1), pyramid_levels=0),
        workers=1,
    )
    first = run_build(params)
    return params, first, manifest, src, out


def _mosmed_outputs(out: Path) -> dict[str, str]:
    return {
        k: v
        for k, v in file_digests(out).items()
        if k.startswith(("volumes/mosmed/", "cases/mosmed/"))
    }


def test_a_source_left_out_keeps_every_store_and_row(built) -> None:
    from verse_etl.flows.build import run_build

    params, first, _, _, out = built
    mosmed_before, series_before = _mosmed_outputs(out), read_frame(out, "series")
    assert any(k.endswith("zarr.json") for k in mosmed_before)
    again = run_build(replace(params, sources=replace(params.sources, mosmed=""), prune=True))
    assert again.rows == first.rows
    assert "mosmed" not in again.pruning
    assert _mosmed_outputs(out) == mosmed_before
    assert read_frame(out, "series").equals(series_before)


def test_an_emptied_or_missing_folder_prunes_nothing_and_says_so(built, tmp_path: Path) -> None:
    from verse_etl.flows.build import run_build

    params, first, manifest, _, out = built
    before = file_digests(out / "volumes")
    empty = tmp_path / "unmounted"
    empty.mkdir()
    summary = run_build(
        replace(params, sources=replace(params.sources, verse=str(empty)), prune=True)
    )
    assert "source folder holds no cases (the previous build had 5)" in summary.pruning["verse"]
    assert "nothing pruned" in summary.pruning["verse"]
    assert summary.rows["scans"] == first.rows["scans"] == len(manifest.verse)
    assert file_digests(out / "volumes") == before
    summary = run_build(
        replace(params, sources=replace(params.sources, verse=str(tmp_path / "gone")), prune=True)
    )
    assert "verse source folder not found" in summary.pruning["verse"]
    assert summary.rows == first.rows and file_digests(out / "volumes") == before


def test_a_removed_case_goes_only_when_pruning_is_asked_for(built, tmp_path: Path) -> None:
    from verse_etl.flows.build import run_build

    params, first, manifest, src, out = built
    copy = tmp_path / "verse"
    shutil.copytree(src / "verse", copy)
    gone = manifest.verse[-1]
    for path in copy.rglob(f"sub-{gone.scan_id}*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    fewer = replace(params, sources=replace(params.sources, verse=str(copy)))
    kept = run_build(fewer)
    assert kept.rows["scans"] == first.rows["scans"]
    assert (
        f"1 case(s) no longer in {copy} kept: {gone.scan_id}; pass --prune"
        in (kept.pruning["verse"])
    )
    assert list((out / "volumes" / "verse").glob(f"{gone.scan_id}.*zarr"))

    # Two of five (four scans and the fracture grades) at once is more than prune_max_loss
    # (25%): refused even with --prune.
    other = next(s for s in manifest.verse[:-1] if (src / s.ct).parent.name == f"sub-{s.scan_id}")
    for path in copy.rglob(f"sub-{other.scan_id}*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    refused = run_build(replace(fewer, prune=True))
    assert "2 of the previous 5 verse case(s) are gone (40%)" in refused.pruning["verse"]
    assert refused.rows["scans"] == first.rows["scans"]

    shutil.rmtree(copy)
    shutil.copytree(src / "verse", copy)
    for path in copy.rglob(f"sub-{gone.scan_id}*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    pruned = run_build(replace(fewer, prune=True))
    assert pruned.pruning["verse"] == f"pruning 1 case(s) no longer in {copy}: {gone.scan_id}"
    assert pruned.rows["scans"] == first.rows["scans"] - 1
    assert not list((out / "volumes" / "verse").glob(f"{gone.scan_id}.*zarr"))
    assert not (out / "cases" / "verse" / f"{gone.scan_id}.json").exists()
    assert gone.scan_id not in set(read_frame(out, "scans")["scan_id"])
    assert read_frame(out, "series").shape[0] == first.rows["series"]


@pytest.mark.parametrize(
    ("previous", "current", "enabled", "max_loss", "prune", "says"),
    [
        (["a", "b", "c", "d"], ["a", "b", "c"], True, 0.25, True, "pruning 1 case(s)"),
        (["a", "b", "c", "d"], ["a", "b"], True, 0.25, False, "more than build.prune_max_loss"),
        (["a", "b", "c", "d"], ["a", "b"], True, 0.5, True, "pruning 2 case(s)"),
        (["a", "b"], [], True, 1.0, True, "pruning 2 case(s)"),
        (["a", "b"], [], True, 0.99, False, "holds no cases"),
        (["a", "b"], ["a"], False, 1.0, False, "pass --prune"),
        (["a", "_duplicates"], ["a"], True, 0.0, False, "nothing to prune"),
    ],
)
def test_decide_pruning(previous, current, enabled, max_loss, prune, says) -> None:
    names = [case_result_name("verse", p) for p in previous]
    decision = decide_pruning(
        "verse", "src", True, names, [f"{c}.json" for c in current], enabled, max_loss
    )
    assert decision.prune is prune and says in decision.reason, decision.reason
