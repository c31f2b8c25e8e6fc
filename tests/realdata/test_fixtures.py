"""The real files in ../shared/fixtures go through ingestion and validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from verse_etl.schemas import ScansTable, VertebraeTable

from verse_etl.annotations import read_annotation
from verse_etl.cases.verse import build_verse_scan
from verse_etl.geometry import apply_affine
from verse_etl.params import VolumeParams
from verse_etl.sources.verse import discover_verse
from verse_etl.volumes import IMAGE_PATH, LABELS_PATH, open_array

SUB = "sub-verse004"
BODY_CENTROID_MM = 5.0
"""How close the world centroid must be to the centre of mass of the vertebral body."""


@pytest.fixture(scope="module")
def verse004(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VerSe'19 release folder around the real sub-verse004 mask and centroids.

    The real CT is not shipped; a CT is made on the mask's exact grid (same header, int16 HU) so
    that the real mask and centroid file run through the same code as a full case.
    """
    fixture = shared / "fixtures" / "verse" / SUB
    root = tmp_path_factory.mktemp("verse")
    raw = root / "dataset-verse19training" / "rawdata" / SUB
    der = root / "dataset-verse19training" / "derivatives" / SUB
    raw.mkdir(parents=True)
    der.mkdir(parents=True)
    for f in fixture.iterdir():
        shutil.copy(f, der / f.name)
    mask = nib.load(str(fixture / f"{SUB}_seg-vert_msk.nii.gz"))
    labels = np.asanyarray(mask.dataobj)
    ct = np.where(labels > 0, 700, -1000).astype(np.int16)
    img = nib.Nifti1Image(ct, mask.affine, mask.header)
    img.set_data_dtype(np.int16)
    nib.save(img, str(raw / f"{SUB}_ct.nii.gz"))
    return root


def test_real_mask_header_is_what_the_spec_says(shared: Path) -> None:
    img = nib.load(str(shared / "fixtures" / "verse" / SUB / f"{SUB}_seg-vert_msk.nii.gz"))
    assert img.get_data_dtype() == np.float64
    assert "".join(nib.aff2axcodes(img.affine)) == "PIR"
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (0, 2)


def _body_centre_of_mass(world: np.ndarray) -> np.ndarray:
    """Centre of mass of the vertebral body among the world points (RAS mm) of one vertebra.

    The centroid files give the vertebral-BODY centroid, while the mask also holds the posterior
    arch (pedicles, laminae, spinous process). The two are separated by the spinal canal: in a
    3 mm band around the vertebra's mid-sagittal plane (median x), the largest gap along the
    anterior (+y) axis between mask voxels is the canal; the body is every voxel of the label
    anterior of it. No fraction or threshold is tuned to the data.
    """
    x_mid = np.median(world[:, 0])
    band = np.sort(world[np.abs(world[:, 0] - x_mid) < 3.0, 1])
    gap = int(np.argmax(np.diff(band)))
    back_of_body = band[gap + 1]
    return world[world[:, 1] >= back_of_body].mean(axis=0)


def test_real_verse_case_ingests_and_validates(verse004: Path, tmp_path: Path) -> None:
    (scan,) = discover_verse(verse004)
    assert (scan.scan_id, scan.patient_id, scan.release, scan.split) == (
        "verse004",
        "verse004",
        "verse19",
        "training",
    )
    result = build_verse_scan(
        scan, verse004, tmp_path, VolumeParams(chunks=(32, 32, 32), shard_chunks=(4, 4, 2))
    )
    assert not result.quarantine, result.quarantine
    scans = ScansTable.validate(pd.DataFrame(result.rows["scans"]).assign(source="verse"))
    vertebrae = VertebraeTable.validate(
        pd.DataFrame(result.rows["vertebrae"]).assign(source="verse", release="verse19")
    )
    assert scans.loc[0, "orientation"] == "PIR"
    assert scans.loc[0, "mask_dtype"] == "float64"
    # The centroid file lists T9..L5 (16..24), and so does the mask.
    ctd = json.loads(scan.centroids.read_bytes())
    assert sorted(vertebrae["label"]) == sorted(e["label"] for e in ctd[1:])
    assert vertebrae["in_mask"].all() and vertebrae["in_centroids"].all()
    assert list(vertebrae["level"]) == ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]

    # The store holds the real mask as uint8 labels, voxel for voxel, with the source affine.
    store = tmp_path / scans.loc[0, "store_path"]
    mask_file = nib.load(str(scan.mask.path))
    source = np.asanyarray(mask_file.dataobj)
    stored = open_array(store, LABELS_PATH)[...]
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, source.astype(np.uint8))
    assert open_array(store, IMAGE_PATH).dtype == np.int16
    affine = np.asarray(scans.loc[0, "affine"], dtype=float).reshape(4, 4)
    np.testing.assert_allclose(affine, mask_file.affine)

    spacing = scans.loc[0, ["spacing_i_mm", "spacing_j_mm", "spacing_k_mm"]].astype(float)
    for row in vertebrae.itertuples():
        voxels = np.argwhere(source == row.label)
        world_voxels = apply_affine(affine, voxels)
        centroid = np.array([row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm])
        body = _body_centre_of_mass(world_voxels)
        whole = world_voxels.mean(axis=0)
        # World centroid (file's PIR voxel indices through the oblique affine) on the body.
        assert np.linalg.norm(centroid - body) < BODY_CENTROID_MM, (row.level, centroid, body)
        # ... and the whole-vertebra centre of mass is not (the arch pulls it back, -y).
        assert np.linalg.norm(centroid - whole) > BODY_CENTROID_MM, (row.level, centroid, whole)
        assert centroid[1] > whole[1]
        # The table's own statistics agree with the mask.
        np.testing.assert_allclose([row.com_x_mm, row.com_y_mm, row.com_z_mm], whole, atol=1e-6)
        assert row.mask_voxels == len(voxels) and row.n_components == 1
        assert (row.bbox_i_min, row.bbox_k_max) == (voxels[:, 0].min(), voxels[:, 2].max())
        assert row.volume_mm3 == pytest.approx(row.mask_voxels * np.prod(spacing), rel=1e-6)
        assert row.mask_label_at_centroid == row.label


def test_real_annotations_parse_with_right_counts_and_as_v2(shared: Path, tmp_path: Path) -> None:
    """Every real (v1) file parses completely; rewritten in the v2 schema (segments + type) it
    gives the same points. The table checks run on these files in tests/e2e
    (test_real_annotations_*), where their series exist."""
    files = sorted((shared / "fixtures" / "mosmed" / "annotation").glob("*.json"))
    assert len(files) == 20
    for path in files:
        raw = json.loads(path.read_text())
        parsed = read_annotation(path)
        assert parsed.release == "v1" and not parsed.problems
        assert parsed.folder == path.stem == raw["Folder"]
        assert parsed.series_uid == raw["SeriesInstanceUID"] and parsed.series_uid.endswith(".")
        assert parsed.experts == tuple(raw["Annotation"])
        for expert, vertebrae in raw["Annotation"].items():
            mine = [v for v in parsed.vertebrae if v.expert == expert]
            assert [v.points for v in mine] == [tuple(map(tuple, v)) for v in vertebrae]
        v2 = {
            **raw,
            "Annotation": {
                e: [
                    {"segments": np.asarray(v).reshape(3, 2, 3).tolist(), "type": f"Th{1 + i % 12}"}
                    for i, v in enumerate(vs)
                ]
                for e, vs in raw["Annotation"].items()
            },
        }
        (tmp_path / path.name).write_text(json.dumps(v2))
        again = read_annotation(tmp_path / path.name)
        assert again.release == "v2" and not again.problems
        assert [v.points for v in again.vertebrae] == [v.points for v in parsed.vertebrae]
