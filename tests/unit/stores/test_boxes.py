"""Boxes read straight from shard files: the voxels zarr-python reads, for the stores we write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from verse_etl.geometry.store_frame import StoreFrame
from verse_etl.params import VolumeParams
from verse_etl.stores.boxes import read_box, shard_layout
from verse_etl.stores.shards import StoreMismatchError
from verse_etl.stores.volumes import IMAGE_PATH, LABELS_PATH, StoreWriter, open_array

PARAMS = VolumeParams(chunks=(8, 8, 8), shard_chunks=(2, 2, 2))
SHAPE = (21, 18, 35)  # partial chunks and shards along every axis


def _slabs(volume: np.ndarray, depth: int):
    for k0 in range(0, volume.shape[2], depth):
        yield k0, volume[:, :, k0 : k0 + depth]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two stores of an int16 image and uint8 labels: one as the source is, one permuted and
    flipped (other transpose orders in the chunks); zeros where a chunk is left out of its shard
    and where shards are not written at all."""
    rng = np.random.default_rng(7)
    image = rng.integers(-1024, 3000, SHAPE).astype(np.int16)
    labels = rng.integers(0, 30, SHAPE).astype(np.uint8)
    for volume in (image, labels):
        volume[:, :, :16] = 0  # whole shards of zeros: no file
        volume[:8, :8, 16:24] = 0  # a chunk of zeros beside others: absent from its shard
    frames = [None, StoreFrame((1, 2, 0), (False, True, True), SHAPE)]
    paths = []
    for n, frame in enumerate(frames):
        final = tmp_path_factory.mktemp("boxes") / f"s{n}.zarr"
        with StoreWriter(final, PARAMS, {}, frame=frame) as writer:
            writer.write_array(IMAGE_PATH, SHAPE, image.dtype, _slabs(image, 5))
            writer.write_array(LABELS_PATH, SHAPE, labels.dtype, _slabs(labels, 7))
        paths.append(final)
    return paths


def _boxes(shape: tuple[int, ...], n: int, seed: int) -> list[tuple[slice, ...]]:
    rng = np.random.default_rng(seed)
    boxes = [tuple(slice(0, s) for s in shape), tuple(slice(s - 1, s) for s in shape)]
    for _ in range(n):
        a = [int(rng.integers(0, s)) for s in shape]
        boxes.append(
            tuple(slice(lo, int(rng.integers(lo, s + 1))) for lo, s in zip(a, shape, strict=True))
        )
    return boxes


@pytest.mark.parametrize("name", [IMAGE_PATH, LABELS_PATH, f"{IMAGE_PATH[:-1]}1"])
def test_boxes_hold_what_zarr_reads(stores: list[Path], name: str) -> None:
    orders = set()
    for store in stores:
        array = open_array(store, name)
        layout = shard_layout(array)
        assert layout is not None  # read from the shard files, not through zarr
        orders.add(layout.order)
        for box in _boxes(array.shape, 40, len(orders)):
            got = read_box(array, box, layout)
            assert got.dtype == array.dtype
            np.testing.assert_array_equal(got, np.asarray(array[box]))
    assert len(orders) == 2  # both transpose orders were read


def test_store_without_a_shard_file_reads_as_fill(stores: list[Path], tmp_path: Path) -> None:
    array = open_array(stores[0])
    layout = shard_layout(array)
    assert layout is not None
    files = sorted(p for p in (layout.folder / "c").rglob("*") if p.is_file())
    assert (
        1
        < len(files)
        < np.prod([-(-n // s) for n, s in zip(array.shape, layout.shard, strict=True)])
    )
    box = tuple(slice(0, n) for n in array.shape)
    np.testing.assert_array_equal(read_box(array, box, layout), np.asarray(array[box]))


def test_other_layouts_are_read_through_zarr(tmp_path: Path) -> None:
    data = np.arange(7 * 9 * 5, dtype=np.int16).reshape(7, 9, 5)
    plain = zarr.create_array(tmp_path / "plain.zarr", shape=data.shape, dtype=data.dtype)
    plain[...] = data
    assert shard_layout(plain) is None
    np.testing.assert_array_equal(
        read_box(plain, (slice(1, 6), slice(2, 9), slice(0, 3))), data[1:6, 2:9, 0:3]
    )


def test_steps_and_boxes_past_the_array_are_left_to_zarr(stores: list[Path]) -> None:
    array = open_array(stores[0])
    for box in [
        (slice(0, 21, 2), slice(0, 18), slice(0, 35)),
        (slice(0, 30), slice(0, 18), slice(0, 35)),
    ]:
        np.testing.assert_array_equal(read_box(array, box), np.asarray(array[box]))


def test_damaged_index_or_frame_is_an_error(stores: list[Path], tmp_path: Path) -> None:
    array = open_array(stores[0])
    layout = shard_layout(array)
    assert layout is not None
    shard = max(
        (p for p in (layout.folder / "c").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    key = tuple(int(p) for p in shard.relative_to(layout.folder / "c").parts)
    box = tuple(
        slice(k * s, min(n, (k + 1) * s))
        for k, s, n in zip(key, layout.shard, array.shape, strict=True)
    )
    original = shard.read_bytes()
    try:
        shard.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # the index's checksum
        with pytest.raises(StoreMismatchError, match="checksum"):
            read_box(array, box, layout)
        # A frame announcing another decoded size: its header's nbytes field (bytes 4-8).
        entries = np.frombuffer(original[-(int(np.prod(layout.per_shard)) * 16 + 4) : -4], "<u8")
        offset = int(entries[0]) if int(entries[0]) != 2**64 - 1 else int(entries[2])
        damaged = bytearray(original)
        damaged[offset + 4 : offset + 8] = (1).to_bytes(4, "little")
        shard.write_bytes(bytes(damaged))
        with pytest.raises(StoreMismatchError, match="not a Blosc frame of a whole chunk"):
            read_box(array, box, layout)
    finally:
        shard.write_bytes(original)
    assert json.loads((layout.folder / "zarr.json").read_text())["node_type"] == "array"
