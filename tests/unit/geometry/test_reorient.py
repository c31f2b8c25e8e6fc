"""A mask stored in another orientation than its CT, on the same grid (VerSe'19 MICCAI verse201),
is aligned voxel for voxel and built; anything else stays refused. Made from the real sub-verse004
mask (PIR) rewritten in RAS with nibabel (a lossless transpose and flip)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from verse_etl.geometry.reorient import axis_map
from verse_etl.params import VolumeParams
from verse_etl.sources.verse import discover_verse
from verse_etl.stores.volumes import LABELS_PATH, read_source_order
from verse_etl.verse.case import build_verse_scan

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
SUB = "sub-verse004"
VOLUMES = VolumeParams(chunks=(32, 32, 32), shard_chunks=(4, 4, 2))


def _case(root: Path, shift_mm: float = 0.0) -> Path:
    fixture = SHARED / "fixtures" / "verse" / SUB
    raw = root / "dataset-verse19training" / "rawdata" / SUB
    der = root / "dataset-verse19training" / "derivatives" / SUB
    raw.mkdir(parents=True)
    der.mkdir(parents=True)
    shutil.copy(fixture / f"{SUB}_seg-subreg_ctd.json", der)
    mask = nib.load(str(fixture / f"{SUB}_seg-vert_msk.nii.gz"))
    labels = np.asanyarray(mask.dataobj)
    ct = nib.Nifti1Image(
        np.where(labels > 0, 700, -1000).astype(np.int16), mask.affine, mask.header
    )
    ct.set_data_dtype(np.int16)
    nib.save(ct, str(raw / f"{SUB}_ct.nii.gz"))
    # The mask in RAS: the same voxels, axes transposed and flipped, affine to match.
    ras = nib.as_closest_canonical(nib.Nifti1Image(labels, mask.affine))
    affine = ras.affine.copy()
    affine[0, 3] += shift_mm
    out = nib.Nifti1Image(np.asanyarray(ras.dataobj), affine)
    nib.save(out, str(der / f"{SUB}_seg-vert_msk.nii.gz"))
    return root


def test_mask_in_another_orientation_is_aligned_losslessly(tmp_path: Path) -> None:
    root = _case(tmp_path / "src")
    (scan,) = discover_verse(root)
    result = build_verse_scan(scan, root, tmp_path / "out", VOLUMES)
    records = {q.check: q.reason for q in result.quarantine}
    assert "image_mask_geometry" not in records and "mask_reoriented" in records
    assert "PIR" in records["mask_reoriented"] and "RAS" in records["mask_reoriented"]
    assert "no resampling" in records["mask_reoriented"]
    (row,) = result.rows["scans"]
    stored = read_source_order(tmp_path / "out" / row["store_path"], LABELS_PATH)
    real = np.asanyarray(
        nib.load(str(SHARED / "fixtures" / "verse" / SUB / f"{SUB}_seg-vert_msk.nii.gz")).dataobj
    )
    np.testing.assert_array_equal(stored, real.astype(np.uint8))  # voxel for voxel, CT axes
    levels = [v["level"] for v in result.rows["vertebrae"]]
    assert levels == ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert all(v["mask_label_at_centroid"] == v["label"] for v in result.rows["vertebrae"])


def test_a_mask_off_the_grid_is_still_refused(tmp_path: Path) -> None:
    root = _case(tmp_path / "src", shift_mm=1.0)
    (scan,) = discover_verse(root)
    result = build_verse_scan(scan, root, tmp_path / "out", VOLUMES)
    assert [q.check for q in result.quarantine] == ["image_mask_geometry"]
    assert not result.rows.get("scans")


@pytest.mark.parametrize("flip", [False, True])
def test_axis_map_on_a_rotation_is_none(flip: bool) -> None:
    rot = np.eye(4)
    angle = np.radians(10)
    rot[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    if flip:
        rot[0, :3] *= -1
    assert axis_map(np.eye(4), (10, 10, 10), rot, (10, 10, 10), 0.01) is None
