"""DICOM series are ordered by position, rescaled exactly, and refused when not a clean volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.dicom_factory import write_series
from verse_etl.errors import InputError
from verse_etl.geometry import apply_affine
from verse_etl.io.dicom import SeriesReader, iter_series_slabs, order_series, scan_folder


def _volume(n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-1024, 2000, size=(8, 10, n)).astype(np.int16)


def _load(folder: Path):
    series, ignored, errors = scan_folder(folder)
    assert not errors
    (slices,) = series.values()
    return order_series(slices), ignored


def test_slices_sorted_feet_to_head_and_hu_exact(tmp_path: Path) -> None:
    vol = _volume()
    write_series(tmp_path / "s", vol)
    (tmp_path / "s" / "README.txt").write_text("not dicom")
    geometry, ignored = _load(tmp_path / "s")
    assert [p.name for p in ignored] == ["README.txt"]
    assert geometry.is_volume, geometry.problems
    # InstanceNumber 1 is the most superior slice; position order puts it last.
    assert [s.instance_number for s in geometry.slices] == [6, 5, 4, 3, 2, 1]
    stacked = np.concatenate([slab.copy() for _, slab in iter_series_slabs(geometry, 4)], axis=2)
    np.testing.assert_array_equal(stacked, vol[:, :, ::-1])
    assert stacked.dtype == np.int16


def test_affine_places_voxels_in_ras(tmp_path: Path) -> None:
    write_series(tmp_path / "s", _volume(), spacing=(0.5, 0.7))
    geometry, _ = _load(tmp_path / "s")
    # Voxel (row 2, col 3) of the most inferior slice (InstanceNumber 6, z = 50 - 5 * 1.25).
    lps = np.array([-100 + 3 * 0.7, -120 + 2 * 0.5, 50 - 5 * 1.25])
    ras = lps * [-1, -1, 1]
    np.testing.assert_allclose(apply_affine(geometry.affine, [[2, 3, 0]])[0], ras)
    assert geometry.spacing_mm == pytest.approx((0.5, 0.7, 1.25))


def test_signed_pixels_with_zero_intercept(tmp_path: Path) -> None:
    vol = _volume()
    write_series(tmp_path / "s", vol, intercept=0.0)
    geometry, _ = _load(tmp_path / "s")
    stacked = np.concatenate([slab.copy() for _, slab in iter_series_slabs(geometry, 8)], axis=2)
    np.testing.assert_array_equal(stacked, vol[:, :, ::-1])


@pytest.mark.parametrize(
    "positions, problem",
    [
        ([(0, 0, -1.25 * i) for i in (0, 1, 2, 4, 5, 6)], "missing slices"),
        ([(0, 0, -1.25 * i) for i in (0, 1, 2, 2, 3, 4)], "duplicate slice positions"),
        ([(0, 0.4 * i, -1.25 * i) for i in range(6)], "gantry tilt"),
    ],
)
def test_not_a_clean_volume_is_reported(tmp_path: Path, positions, problem: str) -> None:
    write_series(tmp_path / "s", _volume(), positions=positions)
    geometry, _ = _load(tmp_path / "s")
    assert not geometry.is_volume
    assert any(problem in p for p in geometry.problems), geometry.problems


def test_mixed_orientation_is_reported(tmp_path: Path) -> None:
    uid = "1.2.3.99"
    write_series(tmp_path / "s", _volume(4), series_uid=uid)
    write_series(
        tmp_path / "s" / "loc",
        _volume(1),
        series_uid=uid,
        orientation=(0, 1, 0, 0, 0, -1),
        positions=[(0, 0, 10)],
    )
    geometry, _ = _load(tmp_path / "s")
    assert any("more than one orientation" in p for p in geometry.problems)


def test_missing_geometry_raises_naming_file(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", _volume(3))
    import pydicom

    ds = pydicom.dcmread(paths[1])
    del ds.ImagePositionPatient
    ds.save_as(paths[1])
    series, _, _ = scan_folder(tmp_path / "s")
    with pytest.raises(InputError, match="lack ImagePositionPatient"):
        order_series(next(iter(series.values())))


def test_series_reader_fills_caller_arrays_in_position_order(tmp_path: Path) -> None:
    vol = _volume(7)
    write_series(tmp_path / "s", vol)
    geometry, _ = _load(tmp_path / "s")
    reader = SeriesReader(geometry)
    first = np.empty((8, 10, 4), np.int16, order="F")
    rest = np.empty((8, 10, 3), np.int16, order="F")
    reader.read_into(first)
    reader.read_into(rest)
    np.testing.assert_array_equal(np.concatenate([first, rest], axis=2), vol[:, :, ::-1])
    with pytest.raises(ValueError, match="cannot read"):
        reader.read_into(np.empty((8, 10, 1), np.int16, order="F"))  # past the last slice
