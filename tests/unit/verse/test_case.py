"""VerSe cases end to end through the library (no Prefect): statistics against ground truth
computed here with numpy, and every check on a generated defect, with its quarantine record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from tests.archive_factory import corrupt_zip_member
from verse_etl.cases.outputs import load_case_results
from verse_etl.cases.records import discovery_result
from verse_etl.geometry.affines import apply_affine
from verse_etl.params import CheckParams, VolumeParams
from verse_etl.sources.verse import discover_verse_sources
from verse_etl.tables.assemble import assemble
from verse_etl.tables.parquet import read_table
from verse_etl.verse.case import build_verse_scan, duplicate_scans_result
from verse_etl.verse.fracture_grades import fracture_grades_result
from verse_etl_sample import SampleManifest, write_sample
from verse_etl_sample.verse_variants import (
    copy_scan,
    rewrite_centroids,
    rewrite_mask,
    write_miccai_copy,
    zip_release,
)

VOLUMES = VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2))


def build(root: Path, out: Path, checks: CheckParams | None = None) -> dict[str, pd.DataFrame]:
    """What the flow does, with plain calls: discover, build every scan, assemble."""
    checks = checks or CheckParams()
    found = discover_verse_sources(root)
    results = [build_verse_scan(s, root, out, VOLUMES, checks) for s in found.scans]
    results.append(duplicate_scans_result(list(found.duplicates), root))
    results.append(discovery_result("verse", found.problems, root))
    results.append(fracture_grades_result(found.grade_tables, root, results))
    summary = assemble(results, out, checks)
    tables = {name: read_table(out, name).to_pandas() for name in summary.rows}
    tables["summary"] = summary  # type: ignore[assignment]
    return tables


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleManifest]:
    out = tmp_path_factory.mktemp("sample")
    return out, write_sample(out, seed=2, verse_cases=5, mosmed_studies=0, size="tiny")


@pytest.fixture(scope="module")
def clean(sample, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    src, _ = sample
    return build(src / "verse", tmp_path_factory.mktemp("build"))


@pytest.fixture
def copy(sample, tmp_path: Path) -> tuple[Path, SampleManifest]:
    src, manifest = sample
    shutil.copytree(src / "verse", tmp_path / "verse")
    return tmp_path, manifest


def _quarantine(tables: dict[str, pd.DataFrame], check: str) -> pd.DataFrame:
    q = tables["quarantine"]
    return q[q["check_name"] == check]


def _scan(manifest: SampleManifest, scan_id: str):
    return next(s for s in manifest.verse if s.scan_id == scan_id)


def test_clean_sample_rows_match_ground_truth(sample, clean) -> None:
    src, manifest = sample
    assert clean["quarantine"].empty, clean["quarantine"].to_dict("records")
    scans = clean["scans"].set_index("scan_id")
    vertebrae = clean["vertebrae"]
    for truth in manifest.verse:
        ct = nib.load(src / truth.ct)
        hu = np.asanyarray(ct.dataobj)
        row = scans.loc[truth.scan_id]
        for q in (1, 5, 25, 50, 75, 95, 99):
            assert row[f"hu_p{q:02d}"] == np.percentile(hu, q)
        assert (row["hu_min"], row["hu_max"]) == (hu.min(), hu.max())
        assert row["hu_mean"] == pytest.approx(hu.mean(dtype=np.float64))
        assert row["sidecar_path"].endswith("_ct.json") and pd.isna(row["other_copies"])
        labels = np.asanyarray(nib.load(src / truth.mask).dataobj).astype(np.uint8)
        mine = vertebrae[vertebrae["scan_id"] == truth.scan_id].set_index("label")
        assert tuple(mine.index) == truth.labels
        for label in truth.labels:
            v = mine.loc[label]
            voxels = np.argwhere(labels == label)
            assert v["mask_voxels"] == len(voxels)
            assert [v[f"bbox_{a}_min"] for a in "ijk"] == voxels.min(axis=0).tolist()
            assert [v[f"bbox_{a}_max"] for a in "ijk"] == voxels.max(axis=0).tolist()
            com = apply_affine(ct.affine, [voxels.mean(axis=0)])[0]
            np.testing.assert_allclose([v["com_x_mm"], v["com_y_mm"], v["com_z_mm"]], com)
            _, n = ndimage.label(labels == label, structure=np.ones((3, 3, 3)))
            assert v["n_components"] == n == 1 and v["n_islands"] == 0
            assert v["centroid_in_volume"] and v["mask_label_at_centroid"] == label
            # The body centroid lies anterior (+y) of the whole vertebra's centre of mass.
            assert v["centroid_y_mm"] > v["com_y_mm"]


def test_fracture_grades_are_read_and_joined(sample, clean) -> None:
    _, manifest = sample
    grades = clean["verse_fracture_grades"]
    verse19 = [s for s in manifest.verse if s.release == "verse19"]
    # 18 levels per VerSe'19 scan, plus the row of a scan not in the sample.
    assert len(grades) == 18 * (len(verse19) + 1)
    for truth in verse19:
        mine = grades[grades["scan_id"] == truth.scan_id].set_index("label")
        assert (mine["patient_id"] == truth.patient_id).all() and mine["scan_in_build"].all()
        graded = {label: (g, s) for label, g, s in truth.grades}
        for label, row in mine.iterrows():
            assert row["in_view"] == row["in_vertebrae"] == (label in graded)
            if label in graded:
                assert (row["fracture_grade"], row["fracture_shape"]) == graded[label]
            else:
                assert pd.isna(row["fracture_grade"]) and row["grade_cell"] == ""
    wedge = grades[(grades["scan_id"] == "verse253") & (grades["level"] == "T12")].iloc[0]
    assert (wedge["fracture_grade"], wedge["fracture_shape"]) == (2, 1)
    other = grades[grades["scan_id"] == "verse099"]
    assert not other["scan_in_build"].any() and (other["split"] == "validation").all()
    assert other[other["level"] == "T12"]["foreign_material"].item()
    # The join a user writes: grades of the labelled vertebrae, one per (scan, level).
    joined = clean["vertebrae"].merge(grades, on=["scan_id", "label", "level"])
    assert len(joined) == sum(len(s.grades) for s in verse19)


def test_float_mask_with_non_integer_values_rejects_only_that_scan(copy) -> None:
    root, manifest = copy
    truth = _scan(manifest, "verse008")
    assert truth.mask_dtype == "float64"

    def blur(labels: np.ndarray) -> np.ndarray:
        labels[np.argwhere(labels > 0)[0].tolist()[0], :, :] *= 0.5  # an interpolated edge
        labels[tuple(np.argwhere(labels > 0)[0])] = 19.5
        return labels

    rewrite_mask(root / truth.mask, blur)
    tables = build(root / "verse", root / "out")
    rejected = _quarantine(tables, "mask_integral")
    assert rejected["case_id"].tolist() == ["verse008"]
    assert "non-integer" in rejected["reason"].item() and rejected["file"].item().endswith(
        "_seg-vert_msk.nii.gz"
    )
    assert "verse008" not in set(tables["scans"]["scan_id"])
    assert len(tables["scans"]) == len(manifest.verse) - 1
    assert not list((root / "out" / "volumes" / "verse").glob("verse008.*zarr"))


@pytest.mark.parametrize(("size", "flagged"), [(3, True), (12, False)])
def test_tiny_label_islands_are_flagged(copy, size: int, flagged: bool) -> None:
    root, manifest = copy
    truth = _scan(manifest, "gl003")
    label = truth.labels[0]

    def island(labels: np.ndarray) -> np.ndarray:
        labels[0:size, 0, 0] = label  # a rod in the far corner, away from the spine
        return labels

    rewrite_mask(root / truth.mask, island)
    tables = build(root / "verse", root / "out", CheckParams(min_island_voxels=10))
    row = tables["vertebrae"].set_index(["scan_id", "label"]).loc[("gl003", label)]
    assert row["n_components"] == 2
    assert (row["n_islands"], row["island_voxels"]) == ((1, size) if flagged else (0, 0))
    records = _quarantine(tables, "label_islands")
    assert len(records) == int(flagged)
    if flagged:
        assert (
            records["case_id"].item() == "gl003" and "the row is kept" in records["reason"].item()
        )
        assert json.loads(records["record"].item())["label"] == label
        assert records["file"].item() == truth.mask.relative_to("verse").as_posix()


def test_swapped_labels_break_craniocaudal_order(copy) -> None:
    root, manifest = copy
    truth = _scan(manifest, "verse201")
    a, b = truth.labels[2], truth.labels[3]

    def swap_mask(labels: np.ndarray) -> np.ndarray:
        out = labels.copy()
        out[labels == a], out[labels == b] = b, a
        return out

    def swap_entries(entries: list[dict]) -> list[dict]:
        for e in entries:
            e["label"] = {a: b, b: a}.get(e["label"], e["label"])
        return entries

    rewrite_mask(root / truth.mask, swap_mask)
    rewrite_centroids(root / truth.centroids, swap_entries)
    tables = build(root / "verse", root / "out")
    records = _quarantine(tables, "craniocaudal_order")
    assert sorted(json.loads(r)["label"] for r in records["record"]) == sorted([a, b])
    assert set(records["case_id"]) == {"verse201"}
    assert len(tables["vertebrae"][tables["vertebrae"]["scan_id"] == "verse201"]) == len(
        truth.labels
    )


def test_mask_and_centroid_labels_are_compared_both_ways(copy) -> None:
    root, manifest = copy
    truth = _scan(manifest, "verse506")
    dropped, extra = truth.labels[0], 7  # C7 is far above this lumbar scan

    def edit(entries: list[dict]) -> list[dict]:
        kept = [e for e in entries if e["label"] != dropped]
        return [*kept, {"label": extra, "X": 1.0, "Y": 1.0, "Z": 1.0}]

    rewrite_centroids(root / truth.centroids, edit)
    tables = build(root / "verse", root / "out")
    no_centroid = _quarantine(tables, "mask_label_without_centroid")
    no_label = _quarantine(tables, "centroid_without_mask_label")
    assert [json.loads(r)["label"] for r in no_centroid["record"]] == [dropped]
    assert [json.loads(r)["label"] for r in no_label["record"]] == [extra]
    # Each record names the file to open: the one that holds the label.
    assert no_centroid["file"].item() == truth.mask.relative_to("verse").as_posix()
    assert no_label["file"].item() == truth.centroids.relative_to("verse").as_posix()
    rows = tables["vertebrae"].set_index(["scan_id", "label"])
    assert not rows.loc[("verse506", dropped), "in_centroids"]
    assert not rows.loc[("verse506", extra), "in_mask"]


def test_centroid_outside_the_volume_is_flagged(copy) -> None:
    root, manifest = copy
    truth = _scan(manifest, "verse253")
    moved = truth.labels[1]

    def push(entries: list[dict]) -> list[dict]:
        for e in entries:
            if e["label"] == moved:
                e["X"] = -40.0
        return entries

    rewrite_centroids(root / truth.centroids, push)
    tables = build(root / "verse", root / "out")
    records = _quarantine(tables, "centroid_outside_volume")
    assert [json.loads(r)["label"] for r in records["record"]] == [moved]
    assert records["file"].item() == truth.centroids.relative_to("verse").as_posix()
    row = tables["vertebrae"].set_index(["scan_id", "label"]).loc[("verse253", moved)]
    assert not row["centroid_in_volume"] and pd.isna(row["mask_label_at_centroid"])


def test_centroid_in_another_label_is_flagged(copy) -> None:
    root, manifest = copy
    truth = _scan(manifest, "verse253")
    moved, onto = truth.labels[1], truth.labels[2]

    def into_neighbour(entries: list[dict]) -> list[dict]:
        target = next(e for e in entries if e["label"] == onto)
        for e in entries:
            if e["label"] == moved:
                e.update({k: target[k] for k in ("X", "Y", "Z")})
        return entries

    rewrite_centroids(root / truth.centroids, into_neighbour)
    tables = build(root / "verse", root / "out")
    records = _quarantine(tables, "centroid_outside_label")
    assert [json.loads(r)["label"] for r in records["record"]] == [moved]
    assert records["file"].item() == truth.centroids.relative_to("verse").as_posix()
    row = tables["vertebrae"].set_index(["scan_id", "label"]).loc[("verse253", moved)]
    assert row["mask_label_at_centroid"] == onto


def test_labels_outside_the_map_and_repeated_labels_leave_the_table(copy) -> None:
    root, manifest = copy
    truth = _scan(manifest, "verse201")
    twice = truth.labels[-1]

    def sacrum(labels: np.ndarray) -> np.ndarray:
        labels[0:2, 0:2, 0:2] = 26  # sacrum: in the map, but never labelled in VerSe
        return labels

    rewrite_mask(root / truth.mask, sacrum)
    rewrite_centroids(
        root / truth.centroids, lambda e: [*e, {**next(x for x in e if x["label"] == twice)}]
    )
    tables = build(root / "verse", root / "out")
    q = tables["quarantine"]
    label_rows = q[q["check_name"].str.contains("isin")]
    assert [json.loads(r)["label"] for r in label_rows["record"]] == [26]
    assert "(scan_id=verse201, label=26) fails" in label_rows["reason"].item()
    assert "(label): got 26" in label_rows["reason"].item()
    assert label_rows["file"].item() == truth.mask.relative_to("verse").as_posix()
    repeated = q[q["check_name"].str.contains("unique") | q["reason"].str.contains("unique")]
    assert sorted(json.loads(r)["label"] for r in repeated["record"]) == [twice, twice]
    # A check of the whole row is named once, after the row's key (not once per column).
    assert all(
        r.endswith(f"(scan_id=verse201, label={twice}) fails multiple_fields_uniqueness")
        for r in repeated["reason"]
    ), repeated["reason"].tolist()
    mine = tables["vertebrae"][tables["vertebrae"]["scan_id"] == "verse201"]
    assert set(mine["label"]) == set(truth.labels) - {twice}


@pytest.mark.parametrize("defect", ["affine", "shape"])
def test_image_and_mask_on_different_grids_reject_the_scan(copy, defect: str) -> None:
    root, manifest = copy
    truth = _scan(manifest, "gl003")
    img = nib.load(root / truth.mask)
    if defect == "affine":
        shifted = img.affine.copy()
        shifted[0, 3] += 1.5
        rewrite_mask(root / truth.mask, lambda x: x, affine=shifted)
    else:
        rewrite_mask(root / truth.mask, lambda x: x[:, :, :-1])
    tables = build(root / "verse", root / "out")
    records = _quarantine(tables, "image_mask_geometry")
    assert records["case_id"].tolist() == ["gl003"]
    assert ("1.5 mm" if defect == "affine" else "differs from the CT") in records["reason"].item()
    assert len(tables["scans"]) == len(manifest.verse) - 1


def test_check_modes_decide_what_fails_the_build(copy) -> None:
    root, manifest = copy
    truth = _scan(manifest, "gl003")

    def island(labels: np.ndarray) -> np.ndarray:
        labels[0, 0, 0] = truth.labels[0]
        return labels

    rewrite_mask(root / truth.mask, island)
    raised = build(root / "verse", root / "a", CheckParams(modes={"label_islands": "raise"}))
    assert raised["summary"].failing == 1
    assert _quarantine(raised, "label_islands")["severity"].tolist() == ["raise"]
    ignored = build(root / "verse", root / "b", CheckParams(modes={"label_islands": "ignore"}))
    assert ignored["summary"].failing == 0 and _quarantine(ignored, "label_islands").empty
    warned = build(root / "verse", root / "c")
    assert warned["summary"].failing == 0
    assert _quarantine(warned, "label_islands")["severity"].tolist() == ["warn"]


def test_nan_centroid_entries_are_reported(copy) -> None:
    root, manifest = copy
    truth = _scan(manifest, "verse008")
    path = root / truth.centroids
    text = path.read_text()
    first = json.loads(text)[1]
    path.write_text(text.replace(f'"X": {first["X"]}', '"X": NaN', 1))
    tables = build(root / "verse", root / "out")
    records = _quarantine(tables, "centroid_nan")
    assert len(records) == 1 and f"label {first['label']}" in records["reason"].item()
    # The label is still in the mask: its row stays, flagged as having no centroid.
    flagged = _quarantine(tables, "mask_label_without_centroid")
    assert [json.loads(r)["label"] for r in flagged["record"]] == [first["label"]]


@pytest.mark.parametrize("release", ["verse19", "verse20"])
def test_miccai_centroids_land_on_the_same_world_points(sample, tmp_path, release: str) -> None:
    src, manifest = sample
    reference = build(src / "verse", tmp_path / "ref")["vertebrae"]
    root = tmp_path / "miccai"
    for truth in manifest.verse:
        write_miccai_copy(src, truth, root / "training", release)
    tables = build(root, tmp_path / "out")
    assert tables["quarantine"].empty, tables["quarantine"].to_dict("records")
    assert set(tables["scans"]["centroid_format"]) == {f"miccai{release[-2:]}"}
    merged = reference.merge(tables["vertebrae"], on=["scan_id", "label"], suffixes=("", "_m"))
    assert len(merged) == len(reference)
    for axis in "xyz":
        np.testing.assert_allclose(
            merged[f"centroid_{axis}_mm_m"], merged[f"centroid_{axis}_mm"], atol=0.01
        )


def test_zipped_release_builds_the_same_rows(sample, clean, tmp_path: Path) -> None:
    src, _manifest = sample
    shutil.copytree(src / "verse", tmp_path / "verse")
    zip_release(tmp_path / "verse", "dataset-verse19training", wrapper="download")
    zip_release(tmp_path / "verse", "dataset-01training")
    tables = build(tmp_path / "verse", tmp_path / "out")
    assert tables["quarantine"].empty
    # Paths differ, and so does the store's (named after the case key, which holds the paths).
    paths = {"ct_path", "mask_path", "centroids_path", "sidecar_path", "store_path"}
    a = clean["scans"].drop(columns=list(paths))
    b = tables["scans"].drop(columns=list(paths))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(clean["vertebrae"], tables["vertebrae"])
    assert tables["scans"]["ct_path"].str.contains(r"\.zip/").all()


def test_scan_with_an_unreadable_file_is_rejected_and_saved(copy) -> None:
    root, _ = copy
    archive = zip_release(root / "verse", "dataset-01training")
    corrupt_zip_member(archive, "dataset-01training/rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz")
    scan = next(s for s in discover_verse_sources(root / "verse").scans if s.scan_id == "gl003")
    result = build_verse_scan(scan, root / "verse", root / "out", VOLUMES)
    (record,) = result.quarantine
    assert (record.check, record.table) == ("read", "scans")
    assert record.file == f"{archive.name}/{scan.ct.member}" and "Bad CRC-32" in record.reason
    # Tables are assembled from the saved results: the rejection must be among them.
    (saved,) = [r for r in load_case_results(root / "out") if r.case_id == "gl003"]
    assert saved.quarantine == [record] and not saved.rows


def test_duplicate_across_releases_is_recorded(copy) -> None:
    root, manifest = copy
    truth = _scan(manifest, "verse008")
    copy_scan(root, truth, "dataset-01training")
    tables = build(root / "verse", root / "out")
    records = _quarantine(tables, "duplicate_scan")
    assert records["case_id"].tolist() == ["verse008"]
    assert records["file"].item().startswith("dataset-01training/")
    assert "dataset-verse19training/" in records["reason"].item()
    kept = tables["scans"].set_index("scan_id").loc["verse008"]
    assert kept["release"] == "verse19" and kept["other_copies"] == records["file"].item()
