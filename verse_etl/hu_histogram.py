"""Exact CT intensity statistics from a streamed volume: one int16 histogram, 512 KiB in memory.

CT values of VerSe are whole Hounsfield units stored as int16 (VerSe.md §3). A count per possible
int16 value is enough to give the exact minimum, maximum, mean and any percentile of a volume of
any size, fed slab by slab. Percentiles use numpy's default ("linear") definition, so they equal
``np.percentile(volume, q)``. Float CTs are counted at their value rounded to a whole HU (values
beyond the int16 range at the ends); min, max and mean always use the exact values.
"""

from __future__ import annotations

import math

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
        self.counts = np.zeros(2 * _OFFSET, dtype=np.int64)
        self.minimum = math.inf
        self.maximum = -math.inf
        self.total = 0.0
        self.nonfinite = 0
        self.integral = True

    @property
    def n(self) -> int:
        """Finite values counted."""
        return int(self.counts.sum())

    def add(self, slab: np.ndarray) -> None:
        """Count every value of ``slab`` (any shape, any integer or float dtype)."""
        flat = slab.reshape(-1, order="A")
        for start in range(0, flat.size, _CHUNK):
            self._add_flat(flat[start : start + _CHUNK])

    def _add_flat(self, values: np.ndarray) -> None:
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
        elif values.dtype == np.int16:
            index = values.view(np.uint16) ^ np.uint16(0x8000)  # two's complement -> offset
        else:
            index = np.clip(values.astype(np.int64), -_OFFSET, _OFFSET - 1) + _OFFSET
        if values.size == 0:
            return
        self.counts += np.bincount(index, minlength=2 * _OFFSET)
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        self.total += float(values.sum(dtype=np.float64))

    @property
    def mean(self) -> float:
        """Mean of the finite values (NaN if there are none)."""
        n = self.n
        return self.total / n if n else math.nan

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100), as ``np.percentile`` computes it (linear).

        Returns NaN if nothing was counted.
        """
        n = self.n
        if n == 0:
            return math.nan
        position = (q / 100.0) * (n - 1)  # the same float steps as numpy, for equal results
        lower = math.floor(position)
        cumulative = np.cumsum(self.counts)
        # The value at 0-based rank r is the first bin whose cumulative count exceeds r.
        lo, hi = np.searchsorted(cumulative, [lower, min(lower + 1, n - 1)], side="right")
        a, b, t = float(lo - _OFFSET), float(hi - _OFFSET), position - lower
        # numpy's _lerp: interpolate from the nearer end, so that t = 1 gives b exactly.
        return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t
