"""The store frame: the source grid turned toward superior, posterior, left, as nibabel turns it."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest

from verse_etl.geometry.store_frame import StoreFrame, axis_codes, frame_between, store_frame

SPL = nib.orientations.axcodes2ornt(("S", "P", "L"))


def _affines() -> list[np.ndarray]:
    """Every signed permutation of axes with anisotropic voxels, plus oblique rotations of some."""
    rng = np.random.default_rng(3)
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((-1.0, 1.0), repeat=3):
            a = np.eye(4)
            a[:3, :3] = np.eye(3)[:, perm] * signs * [0.8, 1.0, 2.5]
            a[:3, 3] = rng.uniform(-100, 100, 3)
            out.append(a)
    for a in out[::7]:
        angle = np.radians(rng.uniform(5, 25))  # oblique, still nearest to one permutation
        c, s = np.cos(angle), np.sin(angle)
        tilted = a.copy()
        tilted[:3, :3] = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ a[:3, :3]
        out.append(tilted)
    return out


@pytest.mark.parametrize("affine", _affines())
def test_frame_is_nibabels_turn_to_spl_and_keeps_the_geometry(affine: np.ndarray) -> None:
    shape = (5, 6, 7)
    frame = store_frame(affine, shape)
    turn = nib.orientations.ornt_transform(nib.io_orientation(affine), SPL)
    volume = np.arange(np.prod(shape)).reshape(shape)
    np.testing.assert_array_equal(
        frame.to_store(volume), nib.orientations.apply_orientation(volume, turn)
    )
    store = frame.store_affine(affine)
    np.testing.assert_allclose(store, affine @ nib.orientations.inv_ornt_aff(turn, shape))
    assert axis_codes(store) == "SPL"
    # Voxel coordinates go both ways and name the same world point.
    points = np.random.default_rng(0).uniform(0, 4, (10, 3))
    stored = frame.to_store_index(points)
    np.testing.assert_allclose(frame.to_source_index(stored), points)
    np.testing.assert_allclose(
        nib.affines.apply_affine(store, stored), nib.affines.apply_affine(affine, points)
    )
    np.testing.assert_array_equal(frame.to_source(frame.to_store(volume)), volume)
    assert frame_between(affine, store, frame.store_shape) == frame
    assert StoreFrame.identity(shape).is_identity


def test_frame_between_refuses_affines_of_different_grids() -> None:
    with pytest.raises(ValueError, match="not one grid"):
        frame_between(np.eye(4), np.diag([1.0, 1.0, 2.0, 1.0]), (4, 4, 4))
