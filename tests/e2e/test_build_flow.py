"""The Prefect build flow on a tiny sample: every source voxel, affine and row count checked."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from verse_etl.schemas import TABLES
from zarr import open_group

from tests.file_digests import file_digests
from verse_etl.geometry.affines import LPS_TO_RAS
from verse_etl.params import BuildParams, SourceParams, VolumeParams
from verse_etl.publish.stamp import STAMP_NAME
from verse_etl.stores.volumes import IMAGE_PATH, LABELS_PATH, open_array, read_source_order
from verse_etl.tables.parquet import read_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory):
    from verse_etl_sample import write_sample

    out = tmp_path_factory.mktemp("sample")
    return out, write_sample(out, seed=3, verse_cases=5, mosmed_studies=2, size="tiny")


@pytest.fixture(scope="module")
def built(sample, prefect_server, tmp_path_factory: pytest.TempPathFactory):
    from verse_etl.flows.build import run_build

    src, manifest = sample
    out = tmp_path_factory.mktemp("build")
    params = BuildParams(
        out=str(out),
        sources=SourceParams(verse=str(src / "verse"), mosmed=str(src / "mosmed")),
        volumes=VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2)),
        workers=2,
    )
    summary = run_build(params)
    tables = {name: read_table(out, name).to_pandas() for name in summary.rows}
    return params, summary, tables, manifest, src, out


def test_row_counts_of_every_table(built) -> None:
    _, summary, tables, manifest, src, _ = built
    assert summary.converted == summary.cases
    assert len(tables["scans"]) == len(manifest.verse)
    assert set(tables["scans"]["scan_id"]) == {s.scan_id for s in manifest.verse}
    assert len(tables["vertebrae"]) == sum(len(s.labels) for s in manifest.verse)
    # The sample's grading table: 18 levels (T1..L6) per VerSe'19 scan, plus a scan not built.
    assert len(tables["verse_fracture_grades"]) == 18 * (len(manifest.scan_ids("verse19")) + 1)
    # Every study holds the annotated thin series and a thick decoy series.
    assert len(tables["series"]) == 2 * len(manifest.mosmed)
    assert tables["series"]["is_volume"].all()
    annotated = tables["series"][tables["series"]["annotated"]]
    assert sorted(annotated["series_uid"]) == sorted(manifest.series_uids)
    expected_vertebrae = 0
    for study in manifest.mosmed:
        for release, path in (("v1", study.annotation), ("v2", study.annotation_v2)):
            raw = json.loads((src / path).read_text())
            expected_vertebrae += sum(len(v) for v in raw["Annotation"].values())
            rows = tables["mosmed_vertebrae"]
            rows = rows[(rows["folder"] == study.folder) & (rows["release"] == release)]
            assert rows.groupby("expert").size().to_dict() == {
                e: len(v) for e, v in raw["Annotation"].items()
            }
    assert len(tables["mosmed_vertebrae"]) == expected_vertebrae
    # One consensus row per study, release and vertebra: v1 covers every vertebra, v2 all
    # but the most caudal.
    consensus = tables["mosmed_consensus"]
    assert len(consensus) == sum(2 * len(s.vertebrae) - 1 for s in manifest.mosmed)
    assert tables["quarantine"].empty, tables["quarantine"].to_dict("records")


def test_ingest_then_tables_as_two_flows_write_the_same_tables(built, tmp_path: Path) -> None:
    # `verse-etl ingest` and `verse-etl tables` (flows/stages.py): the build's two halves.
    from verse_etl.flows.stages import run_ingest, run_tables

    params, first, *_, out = built
    halves = replace(params, out=str(tmp_path / "halves"))
    ingested = run_ingest(("verse", "mosmed"), halves)
    assert len(ingested.cases) == first.cases
    assert run_tables(halves).rows == first.rows
    assert file_digests(tmp_path / "halves", ("tables",)) == file_digests(out, ("tables",))


def test_the_progress_artifact_ends_at_100_percent(built) -> None:
    # Updated from a sender thread of its own (flows/progress_artifact.py): the last update
    # is sent before the flow goes on, whatever updates were merged on the way.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-progress"]))
        )
    assert artifact.type == "progress" and float(artifact.data) == 100.0, artifact


def test_verse_voxels_affine_and_spacing_carried_over(built) -> None:
    _, _, tables, manifest, src, out = built
    scans = tables["scans"].set_index("scan_id")
    for scan in manifest.verse:
        row = scans.loc[scan.scan_id]
        ct = nib.load(str(src / scan.ct))
        mask = nib.load(str(src / scan.mask))
        store = out / row["store_path"]
        image = open_array(store, IMAGE_PATH)
        labels = open_array(store, LABELS_PATH)
        assert image.dtype == np.int16 and labels.dtype == np.uint8
        # The source's voxels (the store holds them turned the right way up: store_frame.py).
        np.testing.assert_array_equal(read_source_order(store), np.asanyarray(ct.dataobj))
        np.testing.assert_array_equal(
            read_source_order(store, LABELS_PATH), np.asanyarray(mask.dataobj).astype(np.uint8)
        )
        np.testing.assert_allclose(np.reshape(row["affine"], (4, 4)), ct.affine)
        attrs = open_group(store, mode="r").attrs["verse_etl"]
        np.testing.assert_allclose(attrs["source_affine"], ct.affine)
        np.testing.assert_allclose(attrs["affine"], np.reshape(row["store_affine"], (4, 4)))
        np.testing.assert_allclose(
            [row["spacing_i_mm"], row["spacing_j_mm"], row["spacing_k_mm"]],
            scan.spacing_mm,
            rtol=1e-5,
        )
        assert row["orientation"] == "".join(scan.orientation)
        assert row["mask_dtype"] == scan.mask_dtype
        vertebrae = tables["vertebrae"][tables["vertebrae"]["scan_id"] == scan.scan_id]
        assert tuple(sorted(vertebrae["label"])) == scan.labels


def test_mosmed_voxels_and_affine_match_dicom(built) -> None:
    _, _, tables, manifest, src, out = built
    series = tables["series"].set_index("series_uid")
    for study in manifest.mosmed:
        for uid, files in (
            (study.series_uid, study.files),
            (study.decoy_series_uid, study.decoy_files),
        ):
            row = series.loc[uid]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                datasets = [pydicom.dcmread(src / f) for f in files]
            # Reference: feet-to-head order by ImagePositionPatient z (IOP is axial here).
            datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
            expected = np.stack(
                [
                    d.pixel_array.astype(np.int32) * float(d.RescaleSlope)
                    + float(d.RescaleIntercept)
                    for d in datasets
                ],
                axis=-1,
            )
            stored = read_source_order(out / row["store_path"])
            np.testing.assert_array_equal(stored, expected.astype(np.int16))
            first = datasets[0]
            ps = [float(v) for v in first.PixelSpacing]
            step = np.subtract(datasets[1].ImagePositionPatient, first.ImagePositionPatient)
            lps = np.eye(4)
            lps[:3, 0] = np.asarray(first.ImageOrientationPatient[3:], float) * ps[0]
            lps[:3, 1] = np.asarray(first.ImageOrientationPatient[:3], float) * ps[1]
            lps[:3, 2] = step
            lps[:3, 3] = np.asarray(first.ImagePositionPatient, float)
            np.testing.assert_allclose(
                np.reshape(row["affine"], (4, 4)), LPS_TO_RAS @ lps, atol=1e-6
            )


def test_rebuild_reuses_every_case_and_writes_identical_tables(built) -> None:
    from verse_etl.flows.build import run_build

    params, first, _, _, _, out = built
    before = {p: p.read_bytes() for p in (out / "tables").rglob("*.parquet")}
    again = run_build(params)
    assert again.converted == 0 and again.reused == first.cases and again.stores_written == 0
    # The build left its stamp: a rerun is answered from it, as the full check answers.
    from verse_etl.publish.current import unchanged_build
    from verse_etl.publish.stamp import stamped_build

    assert stamped_build(params) == unchanged_build(params).summary == replace(again, pruning={})
    assert {p: p.read_bytes() for p in (out / "tables").rglob("*.parquet")} == before
    assert len(before) >= len(TABLES)


@pytest.fixture(scope="module")
def real_annotations_built(shared: Path, prefect_server, tmp_path_factory: pytest.TempPathFactory):
    """All 20 real v1 and 20 real v2 annotation files against the synthetic studies
    `sample --annotations` makes (one study per Folder for both releases)."""
    from verse_etl.flows.build import run_build

    from verse_etl_sample import write_annotation_studies

    src = tmp_path_factory.mktemp("real-ann")
    real = shared / "fixtures" / "mosmed"
    write_annotation_studies([real / "annotation", real / "annotation_v2"], src)
    out = tmp_path_factory.mktemp("real-ann-build")
    params = BuildParams(
        out=str(out), sources=SourceParams(verse="", mosmed=str(src / "mosmed")), workers=2
    )
    summary = run_build(params)
    return summary, {name: read_table(out, name).to_pandas() for name in summary.rows}


def test_real_annotations_come_out_with_every_expert_and_vertebra(
    shared: Path, real_annotations_built
) -> None:
    _, tables = real_annotations_built
    # Only the readers' own overlaps are flagged (vertebra_order; the rows stay): in the v2 file
    # of RLADD02000049805 every expert overlaps T2/T3 and T3/T4.
    q = tables["quarantine"]
    assert set(q["check_name"]) == {"vertebra_order"}, q[["check_name", "reason"]].to_dict(
        "records"
    )
    flagged = q[q["file"] == "annotation_v2/RLADD02000049805_RLSDD02000049736.json"]
    assert {json.loads(r)["expert"] for r in flagged["record"]} == {"expert1", "expert2", "expert3"}
    for release, folder in (("v1", "annotation"), ("v2", "annotation_v2")):
        files = sorted((shared / "fixtures" / "mosmed" / folder).glob("*.json"))
        rows = tables["mosmed_vertebrae"]
        rows = rows[rows["release"] == release]
        assert rows["folder"].nunique() == len(files) == 20
        for path in files:
            raw = json.loads(path.read_text())
            mine = rows[rows["folder"] == path.stem].sort_values(["expert", "vertebra_index"])
            assert mine.groupby("expert").size().to_dict() == {
                e: len(v) for e, v in raw["Annotation"].items()
            }
            assert set(mine["series_uid"]) == {raw["SeriesInstanceUID"]}
            for expert, vertebrae in raw["Annotation"].items():
                got = mine[mine["expert"] == expert]
                points = got[
                    [
                        f"{p}_{a}"
                        for p in (
                            "ant_sup",
                            "ant_inf",
                            "mid_sup",
                            "mid_inf",
                            "post_sup",
                            "post_inf",
                        )
                        for a in ("row", "col", "k")
                    ]
                ]
                if release == "v2":
                    assert got["level"].tolist() == [
                        v["type"].replace("Th", "T") for v in vertebrae
                    ]
                    vertebrae = [v["segments"] for v in vertebrae]
                np.testing.assert_array_equal(
                    points.to_numpy(), np.asarray(vertebrae).reshape(len(vertebrae), 18)
                )
    annotated = tables["series"][tables["series"]["annotated"]]
    assert len(annotated) == len(files) and annotated["is_volume"].all()


def test_dask_runner_with_two_workers_gives_identical_outputs(
    built, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from verse_etl.flows.build import run_build

    params, first, *_, out = built
    dask_out = tmp_path / "dask-build"
    capfd.readouterr()
    summary = run_build(replace(params, out=str(dask_out), workers=2), runner="dask")
    assert summary.rows == first.rows and summary.converted == first.cases
    # The stamp records file stats of its own folder: it differs by nature, as the results do.
    skip = ("cases", STAMP_NAME)
    assert file_digests(dask_out, skip=skip) == file_digests(out, skip=skip)
    # One API for the whole build (the Dask client's threads started a temporary server of
    # their own), Dask quiet at INFO, and its workers stopped without being killed.
    said = "".join(capfd.readouterr())
    assert "temporary server" not in said, said
    assert "distributed.scheduler" not in said and "still alive" not in said, said


def test_real_annotations_heights_are_keypoint_distances_times_spacing(
    shared: Path, real_annotations_built
) -> None:
    """Every real expert reading: the heights in mm are the distances between its keypoints,
    in voxel units, scaled by the series' row, column and slice spacing; the world points
    (RAS+ mm) are the store affine applied to the store indices."""
    _, tables = real_annotations_built
    rows = tables["mosmed_vertebrae"]
    series = tables["series"].set_index("series_uid")
    assert len(rows) == sum(
        len(v)
        for folder in ("annotation", "annotation_v2")
        for p in (shared / "fixtures" / "mosmed" / folder).glob("*.json")
        for v in json.loads(p.read_text())["Annotation"].values()
    )
    pairs = {
        "height_ant_mm": ("ant_sup", "ant_inf"),
        "height_mid_mm": ("mid_sup", "mid_inf"),
        "height_post_mm": ("post_sup", "post_inf"),
    }
    for uid, mine in rows.groupby("series_uid"):
        s = series.loc[uid]
        spacing = np.array([s["spacing_row_mm"], s["spacing_col_mm"], s["spacing_slice_mm"]])
        affine = np.reshape(s["affine"], (4, 4))
        for height, (top, bottom) in pairs.items():
            delta = np.stack(
                [mine[f"{top}_{a}"] - mine[f"{bottom}_{a}"] for a in ("row", "col", "k")], axis=1
            )
            np.testing.assert_allclose(
                mine[height], np.linalg.norm(delta * spacing, axis=1), rtol=1e-9
            )
        for name in ("ant_sup", "post_inf"):
            voxels = mine[[f"{name}_row", f"{name}_col", f"{name}_slice"]].to_numpy()
            world = mine[[f"{name}_x_mm", f"{name}_y_mm", f"{name}_z_mm"]].to_numpy()
            np.testing.assert_allclose(voxels @ affine[:3, :3].T + affine[:3, 3], world)
            # InstanceNumber runs head to feet, the store feet to head.
            np.testing.assert_allclose(mine[f"{name}_slice"], s["n_slices"] - 1 - mine[f"{name}_k"])
    # Plausible vertebrae (MOSMED.md §2 sanity ranges: heights 15-40 voxels at ~0.7 mm).
    heights = rows[list(pairs)].to_numpy()
    assert heights.min() > 5 and heights.max() < 45
    assert rows["genant_grade"].isin([0, 1, 2, 3]).all()
    consensus = tables["mosmed_consensus"]
    assert set(consensus["folder"]) == set(rows["folder"])
    assert consensus["mean_keypoint_distance_mm"].dropna().between(0, 20).all()


def test_real_annotations_pair_readers_across_releases_by_keypoints(real_annotations_built) -> None:
    """The renumbered readers of the real releases (v1 expert2 = v2 expert3 in
    RLADD02000001667...) are paired in mosmed_expert_pairs, and every v1 vertebra names the rule
    that gave it its level; a vertebra repeated exactly in v2 takes that copy's label."""
    _, tables = real_annotations_built
    pairs, rows = tables["mosmed_expert_pairs"], tables["mosmed_vertebrae"]
    assert pairs["folder"].nunique() == 20
    same = pairs[pairs["same_reader"]]
    assert ("RLADD02000001667_RLSDD02000001631", "expert2", "expert3") in set(
        zip(same["folder"], same["expert_v1"], same["expert_v2"], strict=True)
    )
    assert (same["n_identical"] > 0).all()
    assert (pairs[~pairs["same_reader"]]["n_identical"] == 0).all()
    v1 = rows[rows["release"] == "v1"]
    assert set(v1["level_source"].dropna()) == {
        "v2_identical_keypoints",
        "v2_same_reader",
        "v2_other_reader",
    }
    v2 = rows[rows["release"] == "v2"]
    point_cols = [c for c in rows.columns if c.endswith(("_row", "_col", "_k"))]
    labels = {
        (f, *np.round(p, 9)): level
        for f, level, p in zip(v2["folder"], v2["level"], v2[point_cols].to_numpy(), strict=True)
    }
    twins = v1[v1["level_source"] == "v2_identical_keypoints"]
    assert len(twins) == sum(
        (f, *np.round(p, 9)) in labels
        for f, p in zip(v1["folder"], v1[point_cols].to_numpy(), strict=True)
    )
    for f, level, p in zip(
        twins["folder"], twins["level"], twins[point_cols].to_numpy(), strict=True
    ):
        assert labels[(f, *np.round(p, 9))] == level


def test_table_artifacts_belong_to_the_run_and_a_failed_build_leaves_its_quarantine(
    built, tmp_path: Path
) -> None:
    # The summary and the quarantine per check are sent while the report is drawn
    # (flows/build.py tables_with_artifacts): the flow waits for them, so they are there, with
    # the run, when the build returns. A build that fails a `raise` check leaves its quarantine
    # before it stops.
    import shutil

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from verse_etl.flows.build import run_build

    from verse_etl.errors import BuildFailed
    from verse_etl.params import CheckParams

    def latest(key: str):
        with get_client(sync_client=True) as client:
            (artifact,) = client.read_latest_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            run = client.read_flow_run(artifact.flow_run_id)
        return artifact, run

    params, summary, *_ = built
    artifact, _ = latest("build-summary")
    rows = json.loads(artifact.data)  # a table artifact's data: its rows as JSON
    assert {row["table"]: row["rows"] for row in rows} == summary.rows

    src = tmp_path / "src"
    shutil.copytree(Path(params.sources.verse).parent, src)
    ct = sorted((src / "verse").rglob("*_ct.nii.gz"))[0]
    ct.write_bytes(ct.read_bytes()[: ct.stat().st_size // 2])  # truncated: check `read`
    failing = replace(
        params,
        out=str(tmp_path / "out"),
        sources=SourceParams(verse=str(src / "verse"), mosmed=str(src / "mosmed")),
        checks=CheckParams(default="raise"),
    )
    with pytest.raises(BuildFailed):
        run_build(failing)
    artifact, run = latest("quarantine-by-check")
    assert run.name == f"build -> {failing.out}", run.name
    checks = {row["check"]: row["mode"] for row in json.loads(artifact.data)}
    assert checks == {"read": "raise"}, artifact.data


def test_a_rebuild_runs_tasks_only_for_the_cases_that_changed(built, tmp_path: Path) -> None:
    # An unchanged case's saved result is taken in the flow (its files' stats as cached, its
    # key, its stores), without a task run; the changed case runs its task, as before.
    import shutil
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from verse_etl.flows.build import run_build

    params, first, *_ = built
    src = tmp_path / "src"
    shutil.copytree(Path(params.sources.verse).parent, src)
    rebuild = replace(
        params,
        out=str(tmp_path / "out"),
        sources=SourceParams(verse=str(src / "verse"), mosmed=str(src / "mosmed")),
    )
    assert run_build(rebuild).converted == first.cases
    centroids = sorted((src / "verse").rglob("*_ctd.json"))[0]
    centroids.write_text(centroids.read_text() + "\n")  # new bytes, the same centroids
    again = run_build(rebuild)
    assert (again.converted, again.reused) == (1, first.cases - 1), again

    name = FlowRunFilterName(any_=[f"build -> {rebuild.out}"])
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        run, _ = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=name), sort=FlowRunSort.START_TIME_DESC
        )
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        while True:  # task runs reach the server as events: wait for the last ones
            names = {t.name for t in client.read_task_runs(flow_run_filter=this_run)}
            if {"tables", "report"} <= {n.split("-")[0] for n in names}:
                break
            assert time.monotonic() < deadline, names
            time.sleep(0.5)
    scan_id = centroids.name.split("_")[0].removeprefix("sub-")
    assert {n for n in names if n.startswith(("verse-", "mosmed-"))} == {f"verse-{scan_id}"}, names
