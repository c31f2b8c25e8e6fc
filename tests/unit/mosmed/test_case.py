"""A MosMed study goes in; series, keypoint, consensus and quarantine rows come out right.

Runs the library (no Prefect) on the deterministic sample (v1 and v2 annotations with known
levels) and on the edge-case studies, whose expected records come with them.
"""

from __future__ import annotations

import json
import math
import shutil
import tarfile
import warnings
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from verse_etl.mosmed.annotations import POINT_NAMES
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.mosmed.measures import genant_grade, grade_ratio
from verse_etl.params import CheckParams, GenantParams, MosmedParams, VolumeParams
from verse_etl.sources.mosmed import discover_mosmed, read_id_mapping
from verse_etl.stores.volumes import open_array, read_source_order
from verse_etl.tables.assemble import assemble
from verse_etl.tables.parquet import read_table
from verse_etl_sample import write_sample
from verse_etl_sample.edge_cases import write_edge_cases

VOLUMES = VolumeParams(chunks=(32, 32, 32), shard_chunks=(2, 2, 2))
TABLE_NAMES = (
    "series",
    "mosmed_vertebrae",
    "mosmed_consensus",
    "mosmed_expert_pairs",
    "quarantine",
)


def _build(root: Path, out: Path, params: MosmedParams | None = None, mapping: Path | None = None):
    mappings = read_id_mapping(mapping) if mapping else ()
    studies = discover_mosmed(root, id_mappings=mappings)
    results = [build_mosmed_study(s, root, out, VOLUMES, params) for s in studies]
    assemble(results, out, CheckParams())
    return results, {name: read_table(out, name).to_pandas() for name in TABLE_NAMES}


def _dicom(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory):
    src = tmp_path_factory.mktemp("sample")
    manifest = write_sample(src, seed=5, verse_cases=4, mosmed_studies=2, size="tiny")
    out = tmp_path_factory.mktemp("build")
    results, tables = _build(src / "mosmed", out)
    return src, out, manifest, results, tables


def test_both_releases_come_out_and_v1_takes_levels_from_v2(sample) -> None:
    _, _, manifest, _, tables = sample
    rows = tables["mosmed_vertebrae"]
    assert tables["quarantine"].empty, tables["quarantine"].to_dict("records")
    for study in manifest.mosmed:
        mine = rows[rows["folder"] == study.folder]
        levels = [v.level for v in study.vertebrae]
        covered = {levels[i] for _, indices in study.v2_experts for i in indices}
        same = dict(study.same_readers)
        assert all(a != b for a, b in same.items())  # renumbered, as in the real releases
        for key, indices in study.experts:
            got = mine[(mine["release"] == "v1") & (mine["expert"] == key)]
            got = got.sort_values("vertebra_index")
            expected = [levels[i] if levels[i] in covered else None for i in indices]
            assert [v if isinstance(v, str) else None for v in got["level"]] == expected
            sources = set(got["level_source"].dropna())
            if key in same:
                # Most vertebrae carried over unchanged, a few re-read by the same reader.
                assert sources == {"v2_identical_keypoints", "v2_same_reader"}
            else:
                assert sources == {"v2_other_reader"}
        pairs = tables["mosmed_expert_pairs"]
        pairs = pairs[pairs["folder"] == study.folder]
        assert len(pairs) == len(study.experts) * len(study.v2_experts)
        found = pairs[pairs["same_reader"]]
        assert dict(zip(found["expert_v1"], found["expert_v2"], strict=True)) == same
        assert (pairs[~pairs["same_reader"]]["n_identical"] == 0).all()
        for key, indices in study.v2_experts:
            got = mine[(mine["release"] == "v2") & (mine["expert"] == key)]
            assert list(got.sort_values("vertebra_index")["level"]) == [levels[i] for i in indices]
            assert set(got["level_source"]) == {"annotation"}
        assert set(mine["id_match"]) == {"exact"}


def test_keypoints_land_on_the_right_voxel_and_world_point(sample) -> None:
    """Reference: the annotation authors' image (slices sorted by InstanceNumber) and the world
    position of MOSMED.md §4 (IPP interpolated between floor(k) and ceil(k), LPS -> RAS)."""
    src, out, manifest, _, tables = sample
    rows = tables["mosmed_vertebrae"]
    for study in manifest.mosmed:
        datasets = sorted(
            (_dicom(src / f) for f in study.files), key=lambda d: int(d.InstanceNumber)
        )
        path = rows[rows["folder"] == study.folder]["store_path"].iloc[0]
        store = open_array(out / path)[...]
        series = tables["series"].set_index("store_path").loc[path]
        affine = np.reshape(series["affine"], (4, 4))
        shape = (series["rows"], series["columns"], series["n_slices"])
        turn = nib.orientations.ornt_transform(
            nib.io_orientation(affine), nib.orientations.axcodes2ornt(("S", "P", "L"))
        )
        raw = json.loads((src / study.annotation).read_text())["Annotation"]
        mine = rows[(rows["folder"] == study.folder) & (rows["release"] == "v1")]
        for expert, vertebrae in raw.items():
            got = mine[mine["expert"] == expert].sort_values("vertebra_index")
            for (_, row), points in zip(got.iterrows(), vertebrae, strict=True):
                for name, (r, c, k) in zip(POINT_NAMES, points, strict=True):
                    k0, k1 = math.floor(k), min(math.ceil(k), len(datasets) - 1)
                    t = k - k0
                    ipp = (1 - t) * np.asarray(datasets[k0].ImagePositionPatient, float) + t * (
                        np.asarray(datasets[k1].ImagePositionPatient, float)
                    )
                    iop = np.asarray(datasets[0].ImageOrientationPatient, float)
                    ps = [float(v) for v in datasets[0].PixelSpacing]
                    lps = ipp + c * ps[1] * iop[:3] + r * ps[0] * iop[3:]
                    world = [row[f"{name}_{a}_mm"] for a in ("x", "y", "z")]
                    np.testing.assert_allclose(world, lps * [-1, -1, 1], atol=1e-6)
                    # The stored voxel at the converted index is the pixel the reader saw.
                    # InstanceNumber runs head to feet, the store feet to head.
                    assert row[f"{name}_slice"] == pytest.approx(len(datasets) - 1 - k)
                    n = round(k)
                    s = len(datasets) - 1 - n
                    hu = datasets[n].pixel_array.astype(int) * float(datasets[n].RescaleSlope)
                    hu += float(datasets[n].RescaleIntercept)
                    # Store frame: the array turned the right way up, as nibabel turns it.
                    stored = [row[f"{name}_store_{a}"] for a in "zyx"]
                    np.testing.assert_allclose(
                        _upright_index((r, c, row[f"{name}_slice"]), turn, shape), stored
                    )
                    at = _upright_index((int(r), int(c), s), turn, shape).astype(int)
                    assert store[tuple(at)] == hu[int(r), int(c)]


def _upright_index(voxel, turn: np.ndarray, shape) -> np.ndarray:
    """Source voxel -> its index in the source turned by the nibabel orientation ``turn``."""
    out = np.zeros(3)
    for i, (axis, flip) in enumerate(turn):
        out[int(axis)] = voxel[i] if flip > 0 else shape[i] - 1 - voxel[i]
    return out


def test_heights_are_keypoint_distances_times_spacing(sample) -> None:
    _, _, _, _, tables = sample
    rows, series = tables["mosmed_vertebrae"], tables["series"].set_index("series_uid")
    assert len(rows) > 0
    for _, row in rows.iterrows():
        s = series.loc[row["series_uid"]]
        spacing = np.array([s["spacing_row_mm"], s["spacing_col_mm"], s["spacing_slice_mm"]])
        for height, (top, bottom) in zip(
            ("height_ant_mm", "height_mid_mm", "height_post_mm"),
            (("ant_sup", "ant_inf"), ("mid_sup", "mid_inf"), ("post_sup", "post_inf")),
            strict=True,
        ):
            delta = np.array(
                [row[f"{top}_{a}"] - row[f"{bottom}_{a}"] for a in ("row", "col", "k")]
            )
            assert row[height] == pytest.approx(float(np.linalg.norm(delta * spacing)), rel=1e-9)
        ratio = grade_ratio(
            {"deformity": row["deformity_ratio"], "crush": row["crush_ratio"]}, GenantParams()
        )
        assert row["genant_grade"] == genant_grade(ratio, GenantParams())  # type: ignore[arg-type]


def test_consensus_has_one_row_per_vertebra_and_release(sample) -> None:
    _, _, manifest, _, tables = sample
    consensus = tables["mosmed_consensus"]
    for study in manifest.mosmed:
        mine = consensus[consensus["folder"] == study.folder]
        v2 = mine[mine["release"] == "v2"]
        assert list(v2["level"]) == [study.vertebrae[i].level for i in study.v2_experts[0][1]]
        assert set(v2["grouped_by"]) == {"level"} and set(v2["n_experts"]) == {2}
        v1 = mine[mine["release"] == "v1"]
        assert len(v1) == len(study.vertebrae)  # every v1 vertebra, labelled or not
        assert set(v1["grouped_by"]) == {"position"}
        # Readers were simulated with ~0.6 mm noise and an integer column: they agree within
        # a few millimetres, never by a whole vertebra.
        assert v1["mean_keypoint_distance_mm"].max() < 8


def test_unchanged_study_is_reused_and_genant_params_rebuild(sample, tmp_path: Path) -> None:
    src, out, _, _, tables = sample
    again, _ = _build(src / "mosmed", out)
    assert all(not r.converted for r in again)
    strict = MosmedParams(
        genant=GenantParams(thresholds=(0.05, 0.1, 0.15), ratios=("deformity", "crush"))
    )
    regraded, new = _build(src / "mosmed", out, strict)
    # Rebuilt (the grades changed), but the grading does not touch the voxels: stores reused.
    assert all(r.converted for r in regraded) and sum(r.stores_written for r in regraded) == 0
    assert (
        new["mosmed_vertebrae"]["genant_grade"] >= tables["mosmed_vertebrae"]["genant_grade"]
    ).all()
    assert (
        new["mosmed_vertebrae"]["genant_grade"].sum()
        > tables["mosmed_vertebrae"]["genant_grade"].sum()
    )
    _build(src / "mosmed", out)  # back to the defaults for the other tests


def test_bad_vertebrae_are_quarantined_by_check(sample, tmp_path: Path) -> None:
    src, _, manifest, _, _ = sample
    study = manifest.mosmed[0]
    root = tmp_path / "mosmed"
    shutil.copytree(src / "mosmed" / "dicom" / study.folder, root / "dicom" / study.folder)
    raw = json.loads((src / study.annotation).read_text())
    expert = next(iter(raw["Annotation"]))
    v = raw["Annotation"][expert]
    v[0] = [v[0][1], v[0][0], *v[0][2:]]  # superior and inferior anterior points swapped
    # Posterior points moved 3 pixels in front of the anterior ones.
    v[1] = [[v[1][i - 4][0] - 3, p[1], p[2]] if i >= 4 else p for i, p in enumerate(v[1])]
    v[2] = [[p[0], p[1], p[2] + 10_000] for p in v[2]]  # below the last slice
    v[3] = [v[3][0], v[3][0], *v[3][2:]]  # zero anterior height
    (root / "annotation").mkdir(parents=True)
    (root / "annotation" / f"{study.folder}.json").write_text(json.dumps(raw))
    v2 = json.loads((src / study.annotation_v2).read_text())
    e2 = next(iter(v2["Annotation"]))
    v2["Annotation"][e2][1]["type"] = v2["Annotation"][e2][0]["type"]  # a level twice
    (root / "annotation_v2").mkdir()
    (root / "annotation_v2" / f"{study.folder}.json").write_text(json.dumps(v2))
    _, tables = _build(root, tmp_path / "out")
    q = tables["quarantine"]
    q = q[q["table_name"] == "mosmed_vertebrae"]
    found = {
        (
            json.loads(r["record"])["release"],
            json.loads(r["record"])["expert"],
            json.loads(r["record"])["vertebra_index"],
        ): r["check_name"]
        for _, r in q.iterrows()
    }
    assert "superior_above_inferior" in found[("v1", expert, 0)]
    assert "anterior_before_posterior" in found[("v1", expert, 1)]
    assert "points_inside_volume" in found[("v1", expert, 2)]
    assert "greater_than" in found[("v1", expert, 3)]
    assert found[("v2", e2, 0)] == found[("v2", e2, 1)] == "one_vertebra_per_level"
    kept = tables["mosmed_vertebrae"]
    assert (
        not kept[(kept["release"] == "v1") & (kept["expert"] == expert)]["vertebra_index"]
        .isin([0, 1, 2, 3])
        .any()
    )
    assert (
        len(kept)
        == sum(len(x) for x in raw["Annotation"].values())
        + sum(len(x) for x in v2["Annotation"].values())
        - 6
    )


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    src = tmp_path_factory.mktemp("edge")
    manifest = write_edge_cases(src, seed=1)
    out = tmp_path_factory.mktemp("edge-build")
    unpack = tmp_path_factory.mktemp("unpack")
    params = MosmedParams(unpack_dir=str(unpack))
    _, tables = _build(src / "mosmed", out, params, src / manifest.id_mapping)
    return src, out, manifest, tables, unpack


def test_edge_cases_are_reported_as_expected(edge) -> None:
    _, _, manifest, tables, _ = edge
    q = tables["quarantine"]
    got = sorted(set(zip(q["case_id"], q["check_name"], strict=True)))
    # instance_order and series_missing come once per release file (v1 and v2).
    assert got == sorted(set(manifest.quarantine)), q[
        ["case_id", "check_name", "reason"]
    ].to_string()
    assert set(q["severity"]) == {"warn"}
    series = tables["series"].set_index("series_uid")
    for uid, verdict in manifest.verdicts:
        assert series.loc[uid, "verdict"] == verdict
        assert series.loc[uid, "is_volume"] == (verdict == "volume")
        # A tilted series is resampled (mosmed.tilt = correct); others are stored only if clean.
        converted = verdict in ("volume", "gantry_tilt")
        assert pd.isna(series.loc[uid, "store_path"]) == (not converted)
    vertebrae = tables["mosmed_vertebrae"]
    got_matches = set(
        zip(vertebrae["folder"], vertebrae["release"], vertebrae["id_match"], strict=True)
    )
    assert got_matches == set(manifest.id_matches)


def test_tilt_localizer_and_missing_slice_numbers(edge) -> None:
    _, _, manifest, tables, _ = edge
    series = tables["series"].set_index("series_uid")
    tilted = series.loc[manifest.study("uid_not_found").decoy_series_uid]
    assert tilted["tilt_deg"] == pytest.approx(15.0, abs=1e-3)
    assert tilted["gantry_detector_tilt_deg"] == pytest.approx(15.0)
    assert not tilted["consistent_in_plane_col"] and not tilted["is_volume"]
    # mosmed.tilt = correct: resampled onto an unsheared grid (no shear left in the affine).
    assert tilted["correction"] == "tilt" and tilted["store_path"] is not None
    m = np.reshape(tilted["affine"], (4, 4))[:3, :3]
    m = m / np.linalg.norm(m, axis=0)
    np.testing.assert_allclose(m.T @ m, np.eye(3), atol=1e-9)
    scouted = series.loc[manifest.study("old_identifiers").series_uid]
    assert (scouted["n_files"], scouted["n_localizers"]) == (scouted["n_slices"] + 1, 1)
    holed = series.loc[manifest.study("missing_slice").decoy_series_uid]
    assert holed["missing_slices"] == 1 and not holed["uniform_slice_spacing"]
    undefined = series.loc[manifest.study("no_instance_number").decoy_series_uid]
    assert pd.isna(undefined["orientation"]) and undefined["instance_order"] == "unknown"
    numberless = series.loc[manifest.study("no_instance_number").series_uid]
    assert numberless["instance_order"] == "missing" and numberless["is_volume"]


def test_packed_study_converts_like_its_files_and_leaves_no_unpacked_files(edge) -> None:
    src, out, manifest, tables, unpack = edge
    study = manifest.study("packed")
    archive = src / "mosmed" / "dicom" / f"{study.folder}.tar.gz"
    assert not (src / "mosmed" / "dicom" / study.folder).exists()
    row = tables["series"].set_index("series_uid").loc[study.series_uid]
    assert row["source_path"] == f"dicom/{study.folder}.tar.gz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert all(n.startswith(f"{study.folder}/{study.folder}/") for n in names)
        prefix = f"{study.folder}/{study.folder}/"
        files = {
            f"{prefix}{Path(p).relative_to(Path('mosmed') / 'dicom' / study.folder).as_posix()}"
            for p in study.files
        }
        datasets = [
            pydicom.dcmread(tar.extractfile(n))
            for n in names
            if n in files  # type: ignore[arg-type]
        ]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    expected = np.stack(
        [d.pixel_array.astype(np.int32) + int(d.RescaleIntercept) for d in datasets], axis=-1
    )
    np.testing.assert_array_equal(read_source_order(out / row["store_path"]), expected)
    assert list(unpack.iterdir()) == []  # the temporary unpack folder is gone


def test_old_identifiers_are_matched_through_the_mapping(edge) -> None:
    src, _, manifest, tables, _ = edge
    study = manifest.study("old_identifiers")
    rows = tables["mosmed_vertebrae"]
    mine = rows[(rows["folder"] == study.folder) & (rows["release"] == "v1")]
    assert set(mine["id_match"]) == {"mapping"} and set(mine["series_uid"]) == {study.series_uid}
    old_file = Path(mine["annotation_path"].iloc[0])
    assert old_file.stem != study.folder
    assert json.loads((src / "mosmed" / old_file).read_text())["Folder"] == old_file.stem
    # Without the mapping the same file is an annotation without study.
    _, plain = _build(src / "mosmed", src / "no-mapping")
    q = plain["quarantine"]
    assert ((q["case_id"] == old_file.stem) & (q["check_name"] == "study_missing")).any()


def test_geometry_tolerance_comes_from_params(edge, tmp_path: Path) -> None:
    src, _, manifest, _, _ = edge
    # The decoy with one 5 mm slice missing has a 10 mm gap: within a 6 mm tolerance it passes
    # as a (coarser) regular grid, which shows the tolerance reaches the checks.
    lax = replace(MosmedParams(), slice_tolerance_mm=6.0)
    _, tables = _build(src / "mosmed", tmp_path / "out", lax, src / manifest.id_mapping)
    holed = (
        tables["series"]
        .set_index("series_uid")
        .loc[manifest.study("missing_slice").decoy_series_uid]
    )
    assert holed["verdict"] == "volume" and holed["uniform_slice_spacing"]
