"""Centroid files are read onto the image's own axes and mapped to world RAS mm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verse_etl.errors import InputError
from verse_etl.geometry.affines import apply_affine, axcodes
from verse_etl.verse.centroids import read_centroids


def _write(path: Path, direction: list[str], entries: list[dict]) -> Path:
    path.write_text(json.dumps([{"direction": direction}, *entries]))
    return path


def test_same_direction_is_identity(tmp_path: Path) -> None:
    affine = np.diag([-0.5, -0.5, 1.25, 1])
    path = _write(
        tmp_path / "c.json", ["L", "P", "S"], [{"label": 20, "X": 1.0, "Y": 2.0, "Z": 3.0}]
    )
    parsed = read_centroids(path, (10, 10, 10), affine, axcodes(affine))
    (c,) = parsed.centroids
    assert c.voxel == (1.0, 2.0, 3.0)
    np.testing.assert_allclose(c.world, apply_affine(affine, [[1, 2, 3]])[0])


def test_other_direction_is_permuted_and_flipped(tmp_path: Path) -> None:
    # Image stored LPS, centroid file written for the same data reoriented to PIR.
    shape = (10, 20, 30)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    # voxel (i, j, k) in LPS; in PIR the axes are (P=j, I=flip k, R=flip i).
    i, j, k = 2.0, 5.0, 7.0
    pir = {"X": j, "Y": shape[2] - 1 - k, "Z": shape[0] - 1 - i}
    path = _write(tmp_path / "c.json", ["P", "I", "R"], [{"label": 8, **pir}])
    (c,) = read_centroids(path, shape, affine, "LPS").centroids
    assert c.voxel == (i, j, k)


def test_nan_entries_are_reported_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        '[{"direction": ["L","P","S"]}, {"label": 1, "X": NaN, "Y": 1, "Z": 1}, {"label": 2, "X": 1, "Y": 1, "Z": 1}]'
    )
    parsed = read_centroids(path, (5, 5, 5), np.eye(4), "RAS")
    assert [c.label for c in parsed.centroids] == [2]
    assert parsed.skipped and "label 1" in parsed.skipped[0]


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ('[{"label": 1, "X": 1, "Y": 1, "Z": 1}]', "direction"),
        ('[{"direction": ["L","P","S"]}, {"label": 1, "X": 1}]', "entry 1"),
        ('[{"direction": ["L","L","S"]}]', "cannot be matched"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad_ctd.json"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as info:
        read_centroids(path, (5, 5, 5), np.eye(4), "RAS")
    assert str(info.value).startswith(str(path))


# MICCAI-challenge files: millimetres along fixed axes, no direction element.


def _miccai(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "verse004_ctd.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.mark.parametrize(
    ("fmt", "axes"), [("miccai19", ("I", "P", "L")), ("miccai20", ("P", "I", "R"))]
)
def test_miccai_millimetres_are_mapped_onto_the_image_axes(
    tmp_path: Path, fmt: str, axes: tuple[str, str, str]
) -> None:
    # An LPS image with anisotropic voxels; the same point written the MICCAI way by hand.
    shape = (20, 30, 40)
    spacing = np.array([0.5, 0.8, 2.0])
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    i, j, k = 3.0, 7.0, 11.0
    along = {  # millimetres from the first voxel along each named direction
        "L": i * spacing[0],
        "R": (shape[0] - 1 - i) * spacing[0],
        "P": j * spacing[1],
        "A": (shape[1] - 1 - j) * spacing[1],
        "S": k * spacing[2],
        "I": (shape[2] - 1 - k) * spacing[2],
    }
    x, y, z = (along[a] for a in axes)
    path = _miccai(tmp_path, [{"label": 20, "X": x, "Y": y, "Z": z}])
    parsed = read_centroids(path, shape, affine, "LPS", fmt)
    (c,) = parsed.centroids
    np.testing.assert_allclose(c.voxel, (i, j, k), atol=1e-9)
    assert parsed.format == fmt and parsed.direction == "".join(axes)


def test_miccai_and_subject_files_are_not_confused(tmp_path: Path) -> None:
    subject = _write(tmp_path / "s.json", ["L", "P", "S"], [{"label": 1, "X": 1, "Y": 1, "Z": 1}])
    with pytest.raises(InputError, match="direction element"):
        read_centroids(subject, (5, 5, 5), np.eye(4), "RAS", "miccai19")
    miccai = _miccai(tmp_path, [{"label": 1, "X": 1, "Y": 1, "Z": 1}])
    with pytest.raises(InputError, match="MICCAI"):
        read_centroids(miccai, (5, 5, 5), np.eye(4), "RAS")


def test_tptbox_extras_and_subregion_labels(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    head = {"direction": ["R", "A", "S"], "zoom": [1, 1, 1], "shape": [5, 5, 5]}
    body, arch = 50 * 256 + 20, 41 * 256 + 20
    path.write_text(
        json.dumps(
            [
                head,
                {"label": body, "X": 1, "Y": 2, "Z": 3},
                {"label": arch, "X": 1, "Y": 1, "Z": 1},
                {"label": 21, "X": 2, "Y": 2, "Z": 2},
            ]
        )
    )
    parsed = read_centroids(path, (5, 5, 5), np.eye(4), "RAS")
    assert [c.label for c in parsed.centroids] == [20, 21]
    assert parsed.centroids[0].voxel == (1.0, 2.0, 3.0)
    assert len(parsed.skipped) == 1 and "subregion 41" in parsed.skipped[0]
