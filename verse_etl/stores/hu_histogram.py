"""Exact CT intensity statistics from a streamed volume: one int16 histogram, 512 KiB in memory.

CT values of VerSe are whole Hounsfield units stored as int16 (VerSe.md §3). A count per possible
int16 value is enough to give the exact minimum, maximum, mean and any percentile of a volume of
any size, fed slab by slab. Percentiles use numpy's default ("linear") definition, so they equal
``np.percentile(volume, q)``. Float CTs are counted at their value rounded to a whole HU (values
beyond the int16 range at the ends); min, max and mean always use the exact values.

While a volume is written, :meth:`HuHistogram.add_chunk` counts each chunk on the encoder thread
that has just gathered it (the voxels are in that core's cache; one counting pass, no second read
of the volume from memory): each thread counts into its own array, summed when read.
"""

from __future__ import annotations

import math
import threading

import numpy as np

_OFFSET = 32768
_CHUNK = 1 << 20  # voxels converted at a time: bounds the temporaries (~8 MiB)
PERCENTILES: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)
"""Percentiles reported in the scans table (``hu_p01`` ... ``hu_p99``)."""


class HuHistogram:
    """Accumulate a histogram of CT values over slabs; read exact statistics at the end.

    Examples
    --------
    >>> h = HuHistogram()
    >>> h.add(np.array([[-1000, 0], [40, 1000]], dtype=np.int16))
    >>> h.minimum, h.maximum, h.percentile(50)
    (-1000.0, 1000.0, 20.0)
    """

    def __init__(self) -> None:
        # int16 values are counted exactly: their minimum, maximum and sum follow from the
        # counts at the end, so each slab costs one counting pass. They are counted by bit
        # pattern (index ``value & 0xFFFF``: the int16 voxels viewed as uint16, no conversion)
        # and put in value order when read. Other dtypes are counted at their rounded value,
        # with their exact extremes and sum kept apart.
        self._exact = np.zeros(2 * _OFFSET, dtype=np.int64)
        self._rounded = np.zeros(2 * _OFFSET, dtype=np.int64)
        self._minimum = math.inf
        self._maximum = -math.inf
        self._total = 0.0
        self.nonfinite = 0
        self.integral = True
        # add_chunk: one count array per thread (index ``value + 32768``), summed when read.
        self._threads: list[np.ndarray] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    def _exact_counts(self) -> np.ndarray:
        """Exact int16 counts of add and of every thread's add_chunk, index ``value + 32768``."""
        bits = self._exact + np.sum(self._threads, axis=0) if self._threads else self._exact
        # index ``value & 0xFFFF`` -> ``value + 32768``: 0..32767 move up, -32768..-1 down
        return np.roll(bits, _OFFSET)

    @property
    def counts(self) -> np.ndarray:
        """Values counted per whole HU, index ``value + 32768`` (int64)."""
        return self._exact_counts() + self._rounded

    @property
    def n(self) -> int:
        """Finite values counted."""
        return int(self._exact_counts().sum() + self._rounded.sum())

    @property
    def minimum(self) -> float:
        """Smallest value (inf if nothing was counted)."""
        seen = np.flatnonzero(self._exact_counts())
        return min(self._minimum, float(seen[0] - _OFFSET) if seen.size else math.inf)

    @property
    def maximum(self) -> float:
        """Largest value (-inf if nothing was counted)."""
        seen = np.flatnonzero(self._exact_counts())
        return max(self._maximum, float(seen[-1] - _OFFSET) if seen.size else -math.inf)

    @property
    def total(self) -> float:
        """Sum of the finite values."""
        values = np.arange(-_OFFSET, _OFFSET, dtype=np.int64)
        exact = int(np.dot(self._exact_counts(), values))
        return self._total + float(exact)

    def add_chunk(self, values: np.ndarray) -> None:
        """Count one chunk of an integer volume, from any thread, in any order.

        Thread-safe; the result does not depend on the order of the calls because integer
        values are counted exactly (floats are not accepted here: their sum would depend on
        the order; give them to :meth:`add` in stream order).

        Raises
        ------
        TypeError
            If ``values`` is not of an integer dtype.
        """
        if values.dtype.kind not in "iu":
            raise TypeError(f"add_chunk counts integer voxels only (got {values.dtype})")
        if values.dtype != np.int16:
            with self._lock:  # exact whatever the order: integer counts, extremes and sum
                self.add(values)
            return
        local = self._local
        counts = getattr(local, "counts", None)
        if counts is None:
            counts = local.counts = np.zeros(2 * _OFFSET, dtype=np.int64)
            with self._lock:
                self._threads.append(counts)
        flat = values.reshape(-1, order="A")
        if flat.size == 0:
            return
        # One vectorised int16 pass bounds the values: a constant chunk (air, padding outside
        # the field of view) is counted at once, where counting voxel by voxel would add 1 to
        # the same bin in a dependent chain.
        lo, hi = int(flat.min()), int(flat.max())
        if lo == hi:
            counts[lo & 0xFFFF] += flat.size
            return
        # One counting pass, straight into this thread's counts: the voxels' bit patterns are
        # the indexes (no widened intp copy of the chunk, no per-chunk histogram to add up).
        # On the 512x512x300 CT of benchmarks/convert.py, 64^3 chunks: 0.86-1.02 CPU-ms/MB
        # against 0.99-1.01 for bincount of the values minus the minimum (best-median of 7,
        # load 9): about numpy's floor for counting voxel by voxel; 1.2 on noise-like data.
        np.add.at(counts, flat.view(np.uint16), 1)

    def add(self, slab: np.ndarray) -> None:
        """Count every value of ``slab`` (any shape, any integer or float dtype)."""
        flat = slab.reshape(-1, order="A")
        for start in range(0, flat.size, _CHUNK):
            self._add_flat(flat[start : start + _CHUNK])

    def _add_flat(self, values: np.ndarray) -> None:
        index: np.ndarray  # bin of each value: offset int16 bits, or clipped int64
        if values.dtype == np.int16:
            np.add.at(self._exact, values.view(np.uint16), 1)  # by bit pattern, as add_chunk
            return
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            if not finite.all():
                self.nonfinite += int((~finite).sum())
                values = values[finite]
            if values.size == 0:
                return
            rounded = np.rint(values)
            self.integral = self.integral and bool((rounded == values).all())
            index = np.clip(rounded, -_OFFSET, _OFFSET - 1).astype(np.int64) + _OFFSET
        else:
            index = np.clip(values.astype(np.int64), -_OFFSET, _OFFSET - 1) + _OFFSET
        if values.size == 0:
            return
        self._rounded += np.bincount(index, minlength=2 * _OFFSET)
        self._minimum = min(self._minimum, float(values.min()))
        self._maximum = max(self._maximum, float(values.max()))
        self._total += float(values.sum(dtype=np.float64))

    @property
    def mean(self) -> float:
        """Mean of the finite values (NaN if there are none)."""
        n = self.n
        return self.total / n if n else math.nan

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100), as ``np.percentile`` computes it (linear).

        Returns NaN if nothing was counted.
        """
        counts = self.counts
        n = int(counts.sum())
        if n == 0:
            return math.nan
        position = (q / 100.0) * (n - 1)  # the same float steps as numpy, for equal results
        lower = math.floor(position)
        cumulative = np.cumsum(counts)
        # The value at 0-based rank r is the first bin whose cumulative count exceeds r.
        lo, hi = np.searchsorted(cumulative, [lower, min(lower + 1, n - 1)], side="right")
        a, b, t = float(lo - _OFFSET), float(hi - _OFFSET), position - lower
        # numpy's _lerp: interpolate from the nearer end, so that t = 1 gives b exactly.
        return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


class HuRange:
    """The smallest and largest value of a volume, fed like :class:`HuHistogram` (cheaper: two
    vectorised passes over each chunk while it is in cache, no counting).

    Examples
    --------
    >>> r = HuRange()
    >>> r.add_chunk(np.array([-1000, 40], dtype=np.int16)); r.add(np.array([[3000.5]]))
    >>> r.minimum, r.maximum
    (-1000.0, 3000.5)
    """

    def __init__(self) -> None:
        self.minimum = math.inf
        self.maximum = -math.inf
        self._lock = threading.Lock()

    def add(self, values: np.ndarray) -> None:
        """Take a slab or chunk (any dtype; NaN propagates as numpy's min and max do)."""
        if values.size == 0:
            return
        lo, hi = float(values.min()), float(values.max())
        with self._lock:  # min and max are exact and order-independent: any thread, any order
            self.minimum, self.maximum = min(self.minimum, lo), max(self.maximum, hi)

    add_chunk = add
