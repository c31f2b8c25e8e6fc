"""Zarr stores: voxel-exact, sharded, published only when complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verse_etl.errors import InputError
from verse_etl.params import VolumeParams
from verse_etl.volumes import IMAGE_PATH, LABELS_PATH, StoreWriter, as_labels, open_array

PARAMS = VolumeParams(chunks=(8, 8, 8), shard_chunks=(2, 2, 2))


def _slabs(volume: np.ndarray, depth: int):
    for k0 in range(0, volume.shape[2], depth):
        yield k0, volume[:, :, k0 : k0 + depth]


def test_store_round_trip_and_layout(tmp_path: Path) -> None:
    vol = np.random.default_rng(0).integers(-1024, 3000, (20, 17, 33)).astype(np.int16)
    final = tmp_path / "x.zarr"
    with StoreWriter(final, PARAMS, {"verse_etl": {"k": 1}}) as writer:
        info = writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 16))
    array = open_array(final)
    np.testing.assert_array_equal(array[...], vol)
    assert array.dtype == np.int16
    assert info.chunks == (8, 8, 8) and info.shards == (16, 16, 16)
    assert array.shards == (16, 16, 16)
    # Shards, not chunks, are files: 2 x 2 x 3 shard files for the image.
    assert (
        len([p for p in (final / IMAGE_PATH).rglob("*") if p.is_file() and p.name != "zarr.json"])
        == 12
    )
    assert not list(tmp_path.glob("*.tmp-*"))


def test_failed_write_leaves_no_store_and_keeps_old_one(tmp_path: Path) -> None:
    final = tmp_path / "x.zarr"
    old = np.ones((4, 4, 4), np.int16)
    with StoreWriter(final, PARAMS, {}) as writer:
        writer.write_array(IMAGE_PATH, old.shape, old.dtype, _slabs(old, 4))

    def broken():
        yield 0, np.zeros((4, 4, 2), np.int16)
        raise InputError("src.nii.gz", "file ends early", check="read")

    with pytest.raises(InputError), StoreWriter(final, PARAMS, {}) as writer:
        writer.write_array(IMAGE_PATH, (4, 4, 4), np.dtype(np.int16), broken())
    np.testing.assert_array_equal(open_array(final)[...], old)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_float_mask_becomes_labels_only_if_integral(tmp_path: Path) -> None:
    mask = np.zeros((6, 6, 6), np.float64)
    mask[1:3, 1:3, 1:3] = 20.0
    with StoreWriter(tmp_path / "m.zarr", PARAMS, {}) as writer:
        writer.write_array(
            LABELS_PATH,
            mask.shape,
            np.dtype(np.uint8),
            as_labels(_slabs(mask, 2), Path("m.nii.gz")),
        )
    stored = open_array(tmp_path / "m.zarr", LABELS_PATH)[...]
    assert stored.dtype == np.uint8 and stored.max() == 20
    mask[0, 0, 5] = 19.5
    with pytest.raises(
        InputError,
        match=r"m\.nii\.gz: mask holds non-integer values \(expected whole labels, got e\.g\. 19\.5",
    ):
        list(as_labels(_slabs(mask, 2), Path("m.nii.gz")))
