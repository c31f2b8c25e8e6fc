"""The real files in ../shared/fixtures go through ingestion and validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from schemas import ScansTable, VertebraeTable
from verse_etl.annotations import read_annotation
from verse_etl.cases.verse import build_verse_scan
from verse_etl.geometry import apply_affine
from verse_etl.params import VolumeParams
from verse_etl.sources.verse import discover_verse
from verse_etl.volumes import IMAGE_PATH, LABELS_PATH, open_array

SUB = "sub-verse004"


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
    scans = ScansTable.validate(pd.DataFrame(result.rows["scans"]))
    vertebrae = VertebraeTable.validate(pd.DataFrame(result.rows["vertebrae"]))
    assert scans.loc[0, "orientation"] == "PIR"
    assert scans.loc[0, "mask_dtype"] == "float64"
    # The centroid file lists T9..L5 (16..24), and so does the mask.
    ctd = json.loads(scan.centroids_path.read_text())
    assert sorted(vertebrae["label"]) == sorted(e["label"] for e in ctd[1:])
    assert vertebrae["in_mask"].all() and vertebrae["in_centroids"].all()
    assert list(vertebrae["level"]) == ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]

    # The store holds the real mask as uint8 labels, voxel for voxel, with the source affine.
    store = tmp_path / scans.loc[0, "store_path"]
    source = np.asanyarray(nib.load(str(scan.mask_path)).dataobj)
    stored = open_array(store, LABELS_PATH)[...]
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, source.astype(np.uint8))
    assert open_array(store, IMAGE_PATH).dtype == np.int16
    affine = np.asarray(scans.loc[0, "affine"], dtype=float).reshape(4, 4)
    np.testing.assert_allclose(affine, nib.load(str(scan.mask_path)).affine)

    # World centroids lie on the vertebra: x and z (left-right, up-down) within a few mm of the
    # mask's centre of mass; the body centroid sits anterior of it (posterior elements pull the
    # centre of mass back), by less than 20 mm.
    for row in vertebrae.itertuples():
        com = apply_affine(affine, [np.argwhere(source == row.label).mean(axis=0)])[0]
        world = np.array([row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm])
        assert abs(world[0] - com[0]) < 4 and abs(world[2] - com[2]) < 6, (row.level, world, com)
        assert 0 < world[1] - com[1] < 20, (row.level, world, com)
        assert row.volume_mm3 == pytest.approx(
            row.mask_voxels
            * np.prod(scans.loc[0, ["spacing_i_mm", "spacing_j_mm", "spacing_k_mm"]].astype(float))
        )


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
