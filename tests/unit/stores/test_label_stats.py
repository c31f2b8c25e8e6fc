"""Streaming label statistics and HU histogram equal whole-volume numpy/scipy results."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from verse_etl.stores.hu_histogram import HuHistogram
from verse_etl.stores.label_stats import LabelStatistics, _label_boxes


@pytest.mark.parametrize("seed", range(12))
def test_label_statistics_equal_whole_volume_results(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(x) for x in rng.integers(3, 18, size=3))
    fill = rng.uniform(0.05, 0.5)
    volume = (rng.random(shape) < fill) * rng.integers(1, 5, size=shape)
    volume = volume.astype(np.uint8)
    depth = int(rng.integers(1, 5))
    probes = [(0.2, 0.4, 0.0), (shape[0] - 1.0, 1.0, shape[2] - 0.6), (-1.0, 0.0, 0.0)]
    stats = LabelStatistics(shape, probes=probes)  # type: ignore[arg-type]
    for k0 in range(0, shape[2], depth):
        stats.add(k0, np.asfortranarray(volume[:, :, k0 : k0 + depth]))
    result = stats.result()
    assert sorted(result) == sorted(int(v) for v in np.unique(volume) if v)
    for label, s in result.items():
        components, _ = ndimage.label(volume == label, structure=np.ones((3, 3, 3)))
        sizes = sorted(np.bincount(components.ravel())[1:].tolist(), reverse=True)
        assert list(s.component_sizes) == sizes
        voxels = np.argwhere(volume == label)
        assert s.voxels == len(voxels)
        np.testing.assert_allclose(s.centre_of_mass, voxels.mean(axis=0))
        assert s.bbox_min == tuple(voxels.min(axis=0)) and s.bbox_max == tuple(voxels.max(axis=0))
    expected = [int(volume[0, 0, 0]), int(volume[shape[0] - 1, 1, shape[2] - 1]), None]
    assert stats.probe_labels() == expected


@pytest.mark.parametrize("seed", range(8))
def test_label_boxes_equal_find_objects_on_sparse_slabs(seed: int) -> None:
    # Labels in a small region away from every edge (as vertebrae in a CT's field of view),
    # with absent labels, negative values and empty slabs: the boxes searched inside the
    # non-zero box, shifted back, are scipy's boxes of the whole slab.
    rng = np.random.default_rng(seed)
    slab = np.zeros(tuple(int(x) for x in rng.integers(6, 30, size=3)), dtype=np.int16)
    lo = [int(rng.integers(0, n - 2)) for n in slab.shape]
    hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, slab.shape, strict=True)]
    region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sparse = rng.random(slab[region].shape) < rng.uniform(0.0, 0.3)
    slab[region] = sparse * rng.choice([-1, 2, 3, 7], size=sparse.shape)
    assert _label_boxes(slab) == ndimage.find_objects(slab)
    assert _label_boxes(np.zeros((3, 4, 5), dtype=np.uint8)) == []


def test_components_join_across_slab_boundaries_diagonally() -> None:
    volume = np.zeros((5, 5, 4), dtype=np.uint8)
    volume[1, 1, 1] = volume[2, 2, 2] = 7  # touch by a corner only, across the boundary k=2
    stats = LabelStatistics(volume.shape)  # type: ignore[arg-type]
    stats.add(0, volume[:, :, :2])
    stats.add(2, volume[:, :, 2:])
    assert stats.result()[7].component_sizes == (2,)


def test_slabs_must_continue_the_volume() -> None:
    stats = LabelStatistics((2, 2, 4))
    stats.add(0, np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected k=2"):
        stats.add(3, np.zeros((2, 2, 1), dtype=np.uint8))


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.float32, np.float64])
def test_hu_histogram_equals_numpy(dtype: type) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(0, 600, size=(40, 30, 13))
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(values, info.min, info.max)
    volume = np.rint(values).astype(dtype)
    histogram = HuHistogram()
    for k0 in range(0, 13, 4):
        histogram.add(np.asfortranarray(volume[:, :, k0 : k0 + 4]))
    for q in (0, 1, 5, 25, 50, 75, 95, 99, 100):
        assert histogram.percentile(q) == np.percentile(volume, q), q
    assert (histogram.minimum, histogram.maximum) == (volume.min(), volume.max())
    assert histogram.mean == pytest.approx(volume.mean(dtype=np.float64))
    assert histogram.integral


def test_hu_histogram_of_float_values_rounds_and_says_so() -> None:
    histogram = HuHistogram()
    histogram.add(np.array([-1000.4, 10.2, np.nan, 40.0], dtype=np.float32))
    assert not histogram.integral and histogram.nonfinite == 1 and histogram.n == 3
    assert histogram.minimum == pytest.approx(-1000.4) and histogram.percentile(50) == 10.0


def test_hu_histogram_combines_int16_counts_with_other_dtypes() -> None:
    # int16 slabs are only counted (extremes and sum come from the counts); other dtypes keep
    # their exact extremes and sum apart. Both kinds in one volume give the whole-volume values.
    histogram = HuHistogram()
    assert (histogram.minimum, histogram.maximum, histogram.n) == (math.inf, -math.inf, 0)
    ints = np.array([-1024, 0, 7, 3071], dtype=np.int16)
    floats = np.array([-2000.0, 5000.0], dtype=np.float32)
    histogram.add(ints)
    histogram.add(floats)
    both = np.concatenate([ints.astype(np.float64), floats.astype(np.float64)])
    assert (histogram.minimum, histogram.maximum) == (-2000.0, 5000.0)
    assert histogram.mean == pytest.approx(both.mean()) and histogram.n == 6
    assert histogram.percentile(50) == np.percentile(both, 50)
