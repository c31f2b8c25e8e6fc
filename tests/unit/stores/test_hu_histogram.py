"""HU histogram counted chunk by chunk on the encoder threads: exactly numpy's statistics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from verse_etl.params import VolumeParams
from verse_etl.stores.hu_histogram import HuHistogram, HuRange
from verse_etl.stores.volumes import IMAGE_PATH, StoreWriter, open_array

QUANTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)


def _ct_like(shape: tuple[int, int, int]) -> np.ndarray:
    """int16 CT: constant air, noisy tissue, and both int16 extremes (overflow-prone ranges)."""
    rng = np.random.default_rng(7)
    volume = np.rint(rng.normal(40, 400, size=shape)).clip(-32768, 32767).astype(np.int16)
    volume[: shape[0] // 2, :, : shape[2] // 2] = -1024  # whole constant chunks
    volume[0, 0, 0], volume[-1, -1, -1] = -32768, 32767
    return np.asfortranarray(volume)


def _assert_equals_numpy(histogram: HuHistogram, volume: np.ndarray) -> None:
    expected = np.bincount(volume.astype(np.int64).ravel() + 32768, minlength=65536)
    assert np.array_equal(histogram.counts, expected)
    assert histogram.n == volume.size
    assert (histogram.minimum, histogram.maximum) == (volume.min(), volume.max())
    assert histogram.total == volume.sum(dtype=np.int64)
    assert histogram.mean == volume.mean(dtype=np.float64)
    for q in QUANTILES:
        assert histogram.percentile(q) == np.percentile(volume, q), q


def test_add_chunk_from_many_threads_in_any_order_is_exact() -> None:
    volume = _ct_like((48, 40, 36))
    chunks = [
        volume[i : i + 16, j : j + 16, k : k + 16].ravel("F")
        for i in range(0, 48, 16)
        for j in range(0, 40, 16)
        for k in range(0, 36, 16)
    ]
    np.random.default_rng(1).shuffle(chunks)
    histogram = HuHistogram()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(histogram.add_chunk, chunks))
    _assert_equals_numpy(histogram, volume)


def test_add_chunk_of_other_integer_dtypes_is_exact_and_floats_are_refused() -> None:
    volume = np.random.default_rng(2).integers(0, 3000, size=(10, 9, 8)).astype(np.uint16)
    histogram = HuHistogram()
    histogram.add_chunk(volume[:5].ravel())
    histogram.add_chunk(volume[5:].ravel())
    _assert_equals_numpy(histogram, volume)
    with pytest.raises(TypeError, match="integer"):
        histogram.add_chunk(np.zeros(4, np.float32))


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_writer_statistics_equal_numpy_on_the_stored_volume(tmp_path: Path, dtype: type) -> None:
    # Edge chunks on every axis (shape not a multiple of the chunks): counted without padding.
    # int16 is counted on the encoder threads, float32 in stream order on the in-order thread.
    volume = _ct_like((45, 38, 29)).astype(dtype)
    params = VolumeParams(chunks=(16, 16, 8), shard_chunks=(2, 2, 2), threads=3)
    histogram = HuHistogram()
    slabs = ((k0, volume[:, :, k0 : k0 + 5]) for k0 in range(0, 29, 5))
    with StoreWriter(tmp_path / "s.zarr", params, {}) as writer:
        writer.write_array(IMAGE_PATH, volume.shape, np.dtype(dtype), slabs, statistics=histogram)
    assert np.array_equal(open_array(tmp_path / "s.zarr")[...], volume)
    _assert_equals_numpy(histogram, volume)


def test_hu_range_taken_chunk_by_chunk_in_the_writer_is_the_volume_range(tmp_path: Path) -> None:
    volume = _ct_like((45, 38, 29))
    params = VolumeParams(chunks=(16, 16, 8), shard_chunks=(2, 2, 2), threads=3)
    hu = HuRange()
    slabs = ((k0, volume[:, :, k0 : k0 + 7]) for k0 in range(0, 29, 7))
    with StoreWriter(tmp_path / "s.zarr", params, {}) as writer:
        writer.write_array(IMAGE_PATH, volume.shape, volume.dtype, slabs, statistics=hu)
    assert (hu.minimum, hu.maximum) == (-32768.0, 32767.0) == (volume.min(), volume.max())
