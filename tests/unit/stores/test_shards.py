"""The shard writer streams along any store axis, in either direction, with bounded staging."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xxhash
import zarr

from verse_etl.geometry.store_frame import StoreFrame
from verse_etl.params import VolumeParams
from verse_etl.stores.shards import STAGED_ROWS, ArrayLayout, ShardWriter, Workers
from verse_etl.stores.volumes import IMAGE_PATH, StoreWriter, _codec

VOLUME = np.random.default_rng(0).integers(-1000, 2000, (13, 22, 19)).astype(np.int16)
VOLUME[:, :, :5] = 0  # chunks of fill: left out of their shards
PARAMS = VolumeParams(chunks=(4, 6, 8), shard_chunks=(2, 2, 2), pyramid_levels=2)
# Every source axis as the stream axis of the store (its last axis goes to store axis 0, 1, 2),
# each forward and reversed, other axes flipped in turn.
FRAMES = [
    StoreFrame(perm, flips, VOLUME.shape)  # type: ignore[arg-type]
    for perm, flips in zip(
        itertools.permutations(range(3)),
        itertools.cycle(itertools.product((False, True), repeat=3)),
        strict=False,
    )
] + [StoreFrame((1, 0, 2), (False, True, True), VOLUME.shape)]


class _Reader:
    """A SlabReader over an in-memory volume: decodes its next slices into the given array."""

    dtype = VOLUME.dtype

    def __init__(self) -> None:
        self.position = 0

    def read_into(self, out: np.ndarray) -> None:
        assert out.flags.f_contiguous
        out[...] = VOLUME[:, :, self.position : self.position + out.shape[2]]
        self.position += out.shape[2]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f"{f.axes}{f.flips}")
def test_every_stream_axis_and_direction_stores_the_turned_volume(
    tmp_path: Path, frame: StoreFrame
) -> None:
    expected = frame.to_store(VOLUME)
    source_digest = xxhash.xxh3_128_hexdigest(VOLUME.tobytes(order="F"))
    for kind in ("slabs", "reader"):
        path = tmp_path / f"{kind}.zarr"
        with StoreWriter(path, PARAMS, {}, frame=frame) as writer:
            if kind == "slabs":  # slabs of 3 slices: rows are split and joined
                slabs = ((k, VOLUME[:, :, k : k + 3]) for k in range(0, VOLUME.shape[2], 3))
                info = writer.write_array(IMAGE_PATH, VOLUME.shape, VOLUME.dtype, slabs)
            else:
                info = writer.write_reader(IMAGE_PATH, VOLUME.shape, _Reader())
        assert info.shape == expected.shape and info.voxel_xxh3 == source_digest
        for level in range(PARAMS.pyramid_levels + 1):
            step = 2**level
            got = zarr.open_array(path / str(level), mode="r")[...]
            np.testing.assert_array_equal(got, expected[::step, ::step, ::step], err_msg=kind)


def test_a_reversed_stream_stages_two_rows_and_refuses_a_gap(tmp_path: Path) -> None:
    frame = StoreFrame(
        (1, 0, 2), (False, True, True), VOLUME.shape
    )  # source k -> store x, reversed
    shape = frame.store_shape
    layout = ArrayLayout(
        tmp_path / "a", shape, VOLUME.dtype, (4, 6, 4), (8, 12, 8), _codec(PARAMS, 2), frame
    )
    with ThreadPoolExecutor(2) as pool, ThreadPoolExecutor(1) as serial:
        writer = ShardWriter(layout, Workers(pool, serial))
        for k0 in range(0, VOLUME.shape[2], 2):
            writer.push_source(k0, VOLUME[:, :, k0 : k0 + 2])
        writer.finish()
        assert writer._allocated == STAGED_ROWS  # whatever the number of rows (5 here)
        gap = ShardWriter(layout, Workers(pool, serial))
        gap.push_source(0, VOLUME[:, :, :2])
        with pytest.raises(ValueError, match="does not continue the stream"):
            gap.push_store(0, frame.to_store(VOLUME)[:, :, :1])
        gap.abort()
