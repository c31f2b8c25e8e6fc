"""Gantry tilt and uneven spacing corrected as dcm2niix does, on its own regression series.

dcm_qa_ct's GE head CT (GantryDetectorTilt 18.5 degrees, gaps of 4.0, 1.08 and 7.0 mm) goes
through the case builder with ``mosmed.tilt = correct``; its store is compared with dcm2niix
v1.0.20260724's ``_2_Tilt_Eq_1`` (``Ref_regenerated_dcm2niix_v1.0.20260724``, see
``dcm_qa_ct/ORIGIN.md``): same grid (affine corners within 0.01 mm) and the same voxels up to
the interpolation differences measured below. Annotation points given in the acquired slices
land on the world points where those slices were acquired.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from verse_etl.geometry.series import check_series
from verse_etl.geometry.tilt import iter_resampled, tilt_grid
from verse_etl.io.dicom import scan_folder
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import MosmedParams, VolumeParams
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.stores.volumes import read_source_order

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
GE = SHARED / "corpora" / "dcm_qa_ct" / "In" / "GE"
REFERENCE = (
    SHARED
    / "corpora"
    / "dcm_qa_ct"
    / "Ref_regenerated_dcm2niix_v1.0.20260724"
    / "_2_Tilt_Eq_1.nii.gz"
)
VOLUMES = VolumeParams(chunks=(64, 64, 16), shard_chunks=(8, 8, 2))
# Measured on this series (see the report of issue 15): 99.37 % of the voxels identical, mean
# |difference| 0.43 HU; the others sit on one-voxel bands along the sharp edge between the
# scanner's -1500 padding and the body, where dcm2niix's edge handling picks the neighbouring
# row (up to the edge contrast, 856 HU).
IDENTICAL = 0.993
MEAN_HU = 0.45


def _datasets() -> list[pydicom.Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return sorted(
            (pydicom.dcmread(p, stop_before_pixels=True) for p in GE.glob("*.dcm")),
            key=lambda d: int(d.InstanceNumber),
        )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tilted")
    shutil.copytree(GE, root / "dicom" / "GE_TILT")
    shutil.copytree(GE, root / "dicom" / "GE_REPORT")
    # A reader's vertebra-like points on acquired slices 3.5 .. 20 (InstanceNumber order).
    points = [
        [200.0, 256.0, 3.5],
        [230.0, 256.0, 20.0],
        [210, 250, 3.5],
        [240, 250, 20],
        [220, 240, 4],
        [250, 240, 19.25],
    ]
    (root / "annotation").mkdir()
    for folder in ("GE_TILT", "GE_REPORT"):
        uid = str(_datasets()[0].SeriesInstanceUID)
        (root / "annotation" / f"{folder}.json").write_text(
            json.dumps(
                {"Folder": folder, "SeriesInstanceUID": uid, "Annotation": {"expert1": [points]}}
            )
        )
    out = tmp_path_factory.mktemp("out")
    studies = {s.folder: s for s in discover_mosmed(root)}
    corrected = build_mosmed_study(studies["GE_TILT"], root, out, VOLUMES, MosmedParams())
    reported = build_mosmed_study(
        studies["GE_REPORT"], root, out, VOLUMES, MosmedParams(tilt="report")
    )
    return out, points, corrected, reported


def test_tilted_uneven_series_is_resampled_like_dcm2niix(built) -> None:
    out, _, corrected, _ = built
    (row,) = corrected.rows["series"]
    assert (row["verdict"], row["findings"]) == ("gantry_tilt", "gantry_tilt,uneven_spacing")
    assert row["correction"] == "tilt,equidistant" and not row["is_volume"]
    ours = read_source_order(out / row["store_path"])  # [row, column, slice]
    affine = np.reshape(row["affine"], (4, 4))
    reference = nib.load(str(REFERENCE))
    theirs = np.asanyarray(reference.dataobj)
    assert (reference.dataobj.slope, reference.dataobj.inter) == (1.0, 0.0)
    # Same grid: ours is [row, column, slice], dcm2niix [column, flipped row, slice].
    assert ours.shape == (611, 512, 56) and theirs.shape == (512, 611, 56)
    a = nib.as_closest_canonical(nib.Nifti1Image(ours, affine))
    b = nib.as_closest_canonical(nib.Nifti1Image(theirs, reference.affine))
    corners = np.array(
        [[i, j, k, 1] for i in (0, 511) for j in (0, 610) for k in (0, 55)], dtype=float
    ).T
    assert np.abs((a.affine @ corners) - (b.affine @ corners))[:3].max() < 0.01
    # No shear: orthogonal axes, the slice axis along the image normal.
    m = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(m.T @ m, np.eye(3), atol=1e-9)
    assert row["spacing_slice_mm"] == pytest.approx(144.0883 / 55, abs=1e-4)
    diff = np.abs(np.asanyarray(a.dataobj).astype(int) - np.asanyarray(b.dataobj).astype(int))
    assert (diff == 0).mean() >= IDENTICAL and diff.mean() <= MEAN_HU
    assert (row["hu_min"], row["hu_max"]) == (int(theirs.min()), int(ours.max()))
    # The series as acquired: every slice's position, in position order (RAS).
    positions = np.array([d.ImagePositionPatient for d in _datasets()], dtype=float)
    order = np.argsort(
        positions @ np.cross(*np.reshape(_datasets()[0].ImageOrientationPatient, (2, 3)))
    )
    np.testing.assert_allclose(
        np.reshape(row["acquired_positions_mm"], (-1, 3)), positions[order] * [-1, -1, 1], atol=1e-4
    )


def test_keypoints_map_through_the_acquired_geometry(built) -> None:
    """Reference: the reader's image is the slices sorted by InstanceNumber; a point (r, c, k)
    is IPP interpolated between slices floor(k) and ceil(k), plus r and c along the direction
    cosines (MOSMED.md §4), LPS -> RAS. On the resampled (unsheared) grid the same point has
    other indices: the store index is the inverse affine of that world point."""
    _, points, corrected, _ = built
    (series,) = corrected.rows["series"]
    (row,) = corrected.rows["mosmed_vertebrae"]
    datasets = _datasets()
    iop = np.asarray(datasets[0].ImageOrientationPatient, float)
    ps = [float(v) for v in datasets[0].PixelSpacing]
    inverse = np.linalg.inv(np.reshape(series["affine"], (4, 4)))
    for name, (r, c, k) in zip(
        ("ant_sup", "ant_inf", "mid_sup", "mid_inf", "post_sup", "post_inf"), points, strict=True
    ):
        k0, k1 = int(np.floor(k)), int(np.ceil(k))
        t = k - k0
        ipp = (1 - t) * np.asarray(datasets[k0].ImagePositionPatient, float) + t * np.asarray(
            datasets[k1].ImagePositionPatient, float
        )
        lps = ipp + c * ps[1] * iop[:3] + r * ps[0] * iop[3:]
        world = np.array([row[f"{name}_{a}_mm"] for a in ("x", "y", "z")])
        np.testing.assert_allclose(world, lps * [-1, -1, 1], atol=1e-6)
        index = inverse[:3, :3] @ world + inverse[:3, 3]
        assert row[f"{name}_slice"] == pytest.approx(index[2], abs=1e-9)
    # The sheared stacking would have put the points elsewhere (the drift is up to 48 mm).
    assert row["height_ant_mm"] > 0 and series["annotated"]


def test_report_mode_leaves_the_series_unconverted(built) -> None:
    _, _, _, reported = built
    (row,) = reported.rows["series"]
    assert row["store_path"] is None and row["correction"] is None
    assert not reported.rows.get("mosmed_vertebrae")
    checks = {q.check for q in reported.quarantine}
    assert {"series_gantry_tilt", "series_not_volume"} <= checks
    assert any("not converted" in q.reason for q in reported.quarantine)


def test_resampling_streams_each_slice_once_in_order() -> None:
    """Bounded memory: the resampler asks for each acquired slice once, in increasing order,
    and yields slabs; at most two decoded slices are held."""
    (headers,) = scan_folder(GE).series.values()
    geometry = check_series(headers)
    grid = tilt_grid(geometry.slices)
    asked: list[int] = []

    def read(i: int) -> np.ndarray:
        asked.append(i)
        return np.full((512, 512), i, dtype=np.int16)

    depths = [slab.shape[2] for _, slab in iter_resampled(grid, read, fill=-1500, slab=8)]
    assert asked == sorted(set(asked)) and len(asked) == len(geometry.slices)
    assert sum(depths) == 56 and max(depths) == 8
