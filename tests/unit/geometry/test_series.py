"""A series is sorted by position and called a clean volume only when it is one; else the verdict
says why (idc-index's checks, plus tilt, missing slices and localizers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.dicom_factory import write_series
from verse_etl.geometry.affines import apply_affine
from verse_etl.geometry.series import (
    GeometryTolerances,
    SeriesGeometry,
    check_series,
    store_slice_index,
)
from verse_etl.io.dicom import SliceHeader, scan_folder


def _volume(n: int = 6) -> np.ndarray:
    return np.random.default_rng(1).integers(-1024, 2000, size=(8, 10, n)).astype(np.int16)


def _check(folder: Path, tolerances: GeometryTolerances | None = None) -> SeriesGeometry:
    scan = scan_folder(folder)
    assert not scan.errors
    (headers,) = scan.series.values()
    return check_series(headers, tolerances)


def _axial(steps: list[float], z0: float = 50.0) -> list[tuple[float, float, float]]:
    return [(-100.0, -120.0, z0 - s) for s in steps]


def test_clean_series_sorted_by_position_with_ras_affine(tmp_path: Path) -> None:
    write_series(tmp_path / "s", _volume(), spacing=(0.5, 0.7))
    g = _check(tmp_path / "s")
    assert g.verdict == "volume" and g.findings == () and g.is_volume
    assert all(vars(g.checks).values())
    # InstanceNumber 1 is the most superior slice: position order puts it last.
    assert [s.instance_number for s in g.slices] == [6, 5, 4, 3, 2, 1]
    assert g.instance_order == "descending"
    # Voxel (row 2, col 3) of the most inferior slice (InstanceNumber 6, z = 50 - 5 * 1.25).
    lps = np.array([-100 + 3 * 0.7, -120 + 2 * 0.5, 50 - 5 * 1.25])
    np.testing.assert_allclose(apply_affine(g.affine, [[2, 3, 0]])[0], lps * [-1, -1, 1])
    assert g.spacing_mm == pytest.approx((0.5, 0.7, 1.25))
    assert g.orientation == "PLS" and g.tilt_deg == 0


@pytest.mark.parametrize(
    "steps, verdict, findings, missing",
    [
        ([0, 1.25, 2.5, 5.0, 6.25, 7.5], "missing_slices", ("missing_slices",), 1),
        ([0, 1.25, 2.5, 6.25, 7.5, 8.75], "missing_slices", ("missing_slices",), 2),
        ([0, 1.25, 2.5, 3.25, 4.5, 5.75], "uneven_spacing", ("uneven_spacing",), 0),
        ([0, 1.25, 2.5, 2.5, 3.75, 5.0], "not_a_volume", ("not_a_volume",), 0),
        ([0, 0, 0, 0, 0, 0], "not_a_volume", ("not_a_volume",), 0),
    ],
)
def test_spacing_problems_get_their_verdict(
    tmp_path: Path, steps: list[float], verdict: str, findings: tuple[str, ...], missing: int
) -> None:
    write_series(tmp_path / "s", _volume(), positions=_axial(steps))
    g = _check(tmp_path / "s")
    assert (g.verdict, g.findings, g.missing_slices) == (verdict, findings, missing), g.problems
    assert not g.is_volume and g.affine is None
    assert not g.checks.uniform_slice_spacing


def test_drift_within_tolerance_is_a_volume_but_not_beyond(tmp_path: Path) -> None:
    steps = [0, 1.25, 2.5, 3.8, 5.0, 6.25]  # one slice 0.05 mm off the grid
    write_series(tmp_path / "s", _volume(), positions=_axial(steps))
    assert _check(tmp_path / "s").is_volume
    strict = _check(tmp_path / "s", GeometryTolerances(slice_mm=0.01))
    assert strict.verdict == "uneven_spacing"


def test_gantry_tilt_from_positions_is_measured(tmp_path: Path) -> None:
    # Axial image plane, slice positions sheared along y by tan(12 deg) per mm of z.
    shear = np.tan(np.radians(12.0))
    positions = [(-100.0, -120.0 + shear * 1.25 * i, 50.0 - 1.25 * i) for i in range(6)]
    write_series(tmp_path / "s", _volume(), positions=positions)
    g = _check(tmp_path / "s")
    assert g.verdict == "gantry_tilt" and g.tilt_deg == pytest.approx(12.0, abs=1e-6)
    assert g.checks.consistent_in_plane_row and not g.checks.consistent_in_plane_col
    assert g.checks.uniform_slice_spacing  # the spacing along the normal is fine


def test_tilt_seen_only_in_the_orientation_is_measured(tmp_path: Path) -> None:
    # dicom2nifti's gantrytilting case: tilted image plane, positions stepping straight along z.
    angle = np.radians(14.0)
    iop = (1, 0, 0, 0, np.cos(angle), -np.sin(angle))
    write_series(tmp_path / "s", _volume(4), orientation=iop, positions=_axial([0, 5, 10, 15]))
    g = _check(tmp_path / "s")
    assert g.verdict == "gantry_tilt" and g.tilt_deg == pytest.approx(14.0, abs=1e-6)


def test_irregular_in_plane_shift_is_not_called_a_tilt(tmp_path: Path) -> None:
    positions = [(-100.0 + (3.0 if i == 3 else 0.0), -120.0, 50.0 - 1.25 * i) for i in range(6)]
    write_series(tmp_path / "s", _volume(), positions=positions)
    assert _check(tmp_path / "s").verdict == "in_plane_shift"


def test_localizer_is_set_aside_and_the_rest_converted(tmp_path: Path) -> None:
    uid = "1.2.3.99"
    write_series(tmp_path / "s", _volume(4), series_uid=uid)
    write_series(
        tmp_path / "s" / "scout",
        _volume(1),
        series_uid=uid,
        orientation=(0, 1, 0, 0, 0, -1),
        positions=[(0, 0, 10)],
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        instance_numbers=[5],
    )
    g = _check(tmp_path / "s")
    assert g.is_volume and len(g.slices) == 4 and len(g.localizers) == 1
    assert g.shape[2] == 4


def test_a_scout_not_marked_as_localizer_is_never_stacked(tmp_path: Path) -> None:
    uid = "1.2.3.98"
    write_series(tmp_path / "s", _volume(4), series_uid=uid)
    write_series(
        tmp_path / "s" / "scout",
        _volume(1),
        series_uid=uid,
        orientation=(0, 1, 0, 0, 0, -1),
        positions=[(0, 0, 10)],
        instance_numbers=[5],
    )
    g = _check(tmp_path / "s")
    assert g.verdict == "mixed_orientation" and not g.checks.single_orientation


def test_localizer_only_series(tmp_path: Path) -> None:
    write_series(
        tmp_path / "s",
        _volume(2),
        orientation=(0, 1, 0, 0, 0, -1),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    g = _check(tmp_path / "s")
    assert (g.verdict, g.slices, len(g.localizers)) == ("localizer", (), 2)


@pytest.mark.parametrize(
    "kwargs, verdict",
    [
        ({"orientation": (1, 0, 0, 0.2, 1, 0)}, "not_orthogonal"),
        ({"orientation": (0, 0, 0, 0, 0, 0)}, "no_geometry"),
        ({"pixel_spacings": [(0.7, 0.7)] * 5 + [(0.8, 0.8)]}, "mixed_matrix"),
    ],
)
def test_bad_orientation_or_matrix(tmp_path: Path, kwargs: dict, verdict: str) -> None:
    write_series(tmp_path / "s", _volume(), **kwargs)
    g = _check(tmp_path / "s")
    assert g.verdict == verdict and not g.is_volume, g.problems


def test_single_slice_and_missing_position(tmp_path: Path) -> None:
    write_series(tmp_path / "one", _volume(1))
    assert _check(tmp_path / "one").verdict == "single_slice"
    paths = write_series(tmp_path / "s", _volume(3))
    import pydicom

    ds = pydicom.dcmread(paths[1])
    del ds.ImagePositionPatient
    ds.save_as(paths[1])
    g = _check(tmp_path / "s")
    assert g.verdict == "no_geometry" and g.instance_order == "unknown"
    assert "1 of 3 slice(s) lack" in g.problems[0]


@pytest.mark.parametrize(
    "numbers, order",
    [
        ([1, 2, 3, 4, 5, 6], "descending"),  # head to feet: the usual
        ([6, 5, 4, 3, 2, 1], "ascending"),
        ([1, 2, 3, 5, 4, 6], "unordered"),
        ([1, 2, 3, None, 5, 6], "missing"),
    ],
)
def test_instance_order_and_store_index(tmp_path: Path, numbers: list, order: str) -> None:
    write_series(tmp_path / "s", _volume(), instance_numbers=numbers)
    g = _check(tmp_path / "s")
    assert g.is_volume and g.instance_order == order
    if order in ("ascending", "descending"):
        # k is the position in InstanceNumber order: the slice with the smallest InstanceNumber
        # has k = 0; its store index is where position sorting put it.
        by_number = sorted(g.slices, key=lambda s: s.instance_number)
        for k, header in enumerate(by_number):
            assert store_slice_index(float(k), g) == g.slices.index(header)
        assert store_slice_index(0.25, g) == pytest.approx(
            0.75 * store_slice_index(0.0, g) + 0.25 * store_slice_index(1.0, g)
        )
    else:
        with pytest.raises(ValueError, match=order):
            store_slice_index(0.0, g)


# Each check on headers made in memory (no files): one finding per check, then several at once
# in the driver's order.
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _headers(n: int = 4, **per_slice: list) -> list[SliceHeader]:
    fields = {
        "position": [(-100.0, -120.0, 1.25 * i) for i in range(n)],
        "orientation": [AXIAL] * n,
        "pixel_spacing": [(0.7, 0.7)] * n,
        "rows": [8] * n,
        "instance_number": list(range(1, n + 1)),
    } | per_slice
    return [
        SliceHeader(
            path=Path(f"/series/{i:03d}.dcm"),
            series_uid="1.2.3",
            study_uid="1.2",
            columns=10,
            slope=1.0,
            intercept=0.0,
            image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
            **{name: values[i] for name, values in fields.items()},
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "per_slice, verdict",
    [
        ({}, "volume"),
        ({"position": [(0.0, 0.0, 0.0)] * 4}, "not_a_volume"),
        ({"orientation": [AXIAL] * 3 + [(0.0, 1.0, 0.0, 0.0, 0.0, -1.0)]}, "mixed_orientation"),
        ({"orientation": [(1.0, 0.0, 0.0, 0.2, 1.0, 0.0)] * 4}, "not_orthogonal"),
        ({"rows": [8, 8, 8, 9]}, "mixed_matrix"),
        ({"position": [(-100.0, -120.0 + 0.2 * i, 1.25 * i) for i in range(4)]}, "gantry_tilt"),
        (
            {"position": [(-100.0 + 3 * (i == 2), -120.0, 1.25 * i) for i in range(4)]},
            "in_plane_shift",
        ),
        ({"position": [(-100.0, -120.0, z) for z in (0, 1.25, 3.75, 5.0)]}, "missing_slices"),
        ({"position": [(-100.0, -120.0, z) for z in (0, 1.25, 3.0, 4.25)]}, "uneven_spacing"),
    ],
)
def test_each_check_alone(per_slice: dict, verdict: str) -> None:
    g = check_series(_headers(**per_slice))
    assert g.verdict == verdict
    assert g.findings == (() if verdict == "volume" else (verdict,))
    assert len(g.problems) == len(g.findings), g.problems


def test_several_findings_keep_severity_and_check_order() -> None:
    # Duplicate positions, a second matrix size and an in-plane jump at once.
    positions = [(-100.0 + 3 * (i == 3), -120.0, z) for i, z in enumerate((0, 1.25, 1.25, 2.5))]
    g = check_series(_headers(position=positions, rows=[8, 8, 8, 9]))
    assert g.findings == ("not_a_volume", "mixed_matrix", "in_plane_shift")
    assert g.verdict == "not_a_volume" and g.affine is None
    assert [p.split(" ")[0] for p in g.problems] == ["1", "slices", "slice"]
    assert "duplicate" in g.problems[0] and "matrix" in g.problems[1]
    assert not g.checks.unique_slice_positions and not g.checks.consistent_image_dimensions
