"""Gantry tilt and uneven slice spacing: resample a sheared or irregular CT series onto a regular,
unsheared grid, as dcm2niix's ``_Tilt_Eq`` output, streaming slab by slab.

A tilted gantry acquires parallel axial planes whose ImagePositionPatient drifts within the image
plane from slice to slice (a sheared volume); some series also leave uneven gaps between slices.
Stacking such slices on a regular grid misplaces anatomy. dcm2niix (``nii_dicom_batch.cpp``:
``nii_saveNII3Dtilt`` then ``nii_saveNII3Deq``) corrects it in two separable linear steps, and
so does this module:

1. **tilt**: each slice is shifted within its plane by its drift (read here from the positions
   themselves, not from GantryDetectorTilt and its vendor-dependent sign), linear interpolation
   between the two nearest rows (columns), rounded to whole HU; the plane is extended by
   ``ceil(|largest drift|)`` rows (columns) on the side the slices drift to, filled with the
   lowest value of the series;
2. **equidistant slices**: the output slices are ``min positive gap`` apart from the first
   slice (``ceil((last - half the last gap) / gap)`` of them, at most twice the input count, in
   which case the gap is ``last / (2 n - 1)``), each a linear blend of the two tilt-corrected
   input slices around it, rounded to whole HU (beyond the last slice: the last slice).

The output axes are the image's own: rows along the column cosines, columns along the row
cosines, slices along their normal, so the affine has no shear. The acquired geometry (where
each slice really was) is kept in :class:`TiltGrid` so that annotation points given in the
acquired slices map to world coordinates exactly (:meth:`TiltGrid.acquired_world`).

Memory: two decoded input slices and one output slab at a time, whatever the series size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from verse_etl.geometry.affines import dicom_affine

if TYPE_CHECKING:  # type hints only: geometry stays free of the DICOM reader (and pydicom)
    from verse_etl.io.dicom import SliceHeader

CORRECTIONS = ("tilt", "equidistant")
"""What a resampling can correct (the ``series.correction`` values, comma-joined)."""


@dataclass(frozen=True)
class TiltGrid:
    """The regular grid a tilted or unevenly spaced series is resampled to, and how it was
    acquired.

    Attributes
    ----------
    shape
        ``(rows, columns, slices)`` of the resampled store.
    affine
        RAS+ affine of the store's ``[row, column, slice]`` (orthogonal: no shear).
    slice_mm
        Distance between output slices along the normal.
    along_mm
        Acquired slice positions along the normal, from the first (position-sorted slices).
    drift_px
        ``(n, 2)`` in-plane drift of each acquired slice relative to the first, in rows and
        columns.
    offset_px
        Rows and columns added before the first slice's row 0 and column 0 (the planes drift
        that way).
    corrections
        Which of :data:`CORRECTIONS` the grid applies.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    slice_mm: float
    along_mm: np.ndarray
    drift_px: np.ndarray
    offset_px: tuple[int, int]
    corrections: tuple[str, ...]
    _positions: np.ndarray
    _row_dir: np.ndarray
    _col_dir: np.ndarray
    _normal: np.ndarray
    _pixel: tuple[float, float]

    def acquired_world(self, points: np.ndarray, order: Sequence[int] | np.ndarray) -> np.ndarray:
        """World RAS+ mm of points given in the acquired slices.

        Parameters
        ----------
        points
            ``(n, 3)`` ``[row, column, k]``: pixel row and column of the acquired image, ``k``
            the (fractional) index of the acquired slice in the order ``order``.
        order
            Position-sorted slice index of each slice of that order (e.g. of InstanceNumber
            order: annotation points count slices that way).

        Returns
        -------
        ``(n, 3)`` RAS+ mm: ImagePositionPatient interpolated linearly between the two slices
        around ``k`` (MOSMED.md §4), plus row and column along the direction cosines.
        """
        p = np.asarray(points, dtype=float).reshape(-1, 3)
        positions = self.acquired_positions()[np.asarray(order)]
        k = np.clip(p[:, 2], 0, len(positions) - 1)
        k0 = np.floor(k).astype(int)
        k1 = np.minimum(k0 + 1, len(positions) - 1)
        t = (k - k0)[:, None]
        ipp = (1 - t) * positions[k0] + t * positions[k1]
        lps = (
            ipp
            + p[:, :1] * self._pixel[0] * self._col_dir
            + p[:, 1:2] * self._pixel[1] * (self._row_dir)
        )
        return lps * np.array([-1.0, -1.0, 1.0])

    def store_index(self, world: np.ndarray) -> np.ndarray:
        """Fractional store ``[row, column, slice]`` of RAS+ points."""
        w = np.asarray(world, dtype=float).reshape(-1, 3)
        inverse = np.linalg.inv(self.affine)
        return w @ inverse[:3, :3].T + inverse[:3, 3]

    def acquired_positions(self) -> np.ndarray:
        """Acquired ImagePositionPatient (LPS mm) of each position-sorted slice, ``(n, 3)``."""
        return self._positions.copy()


def tilt_grid(
    slices: Sequence[SliceHeader], tolerance_mm: float = 0.1, slice_tolerance_mm: float = 0.2
) -> TiltGrid:
    """The regular grid for position-sorted slices of one orientation (see the module docstring).

    Parameters
    ----------
    slices
        Sorted ascending along the slice normal (:func:`verse_etl.geometry.series.check_series`),
        one matrix, one orientation, one PixelSpacing, unique positions.
    tolerance_mm
        In-plane drift below this (over the whole series) is no tilt (``mosmed.in_plane_tolerance_mm``).
    slice_tolerance_mm
        Slices within this of a regular grid are evenly spaced (``mosmed.slice_tolerance_mm``,
        as :func:`verse_etl.geometry.series.check_series` decides).

    Raises
    ------
    ValueError
        Fewer than 3 slices or positions not strictly increasing along the normal.
    """
    if len(slices) < 3:
        raise ValueError(f"{len(slices)} slices (expected at least 3 to resample)")
    first = slices[0]
    iop = np.asarray(first.orientation, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    ps = (float(first.pixel_spacing[0]), float(first.pixel_spacing[1]))  # type: ignore[index]  # geometry checked: spacing set
    positions = np.asarray([s.position for s in slices], dtype=float)
    rel = positions - positions[0]
    along = rel @ normal
    if np.any(np.diff(along) <= 0):
        raise ValueError("slice positions are not strictly increasing along the normal")
    drift = np.column_stack([rel @ col_dir / ps[0], rel @ row_dir / ps[1]])
    tilted = bool(np.max(np.abs(drift) * ps) > tolerance_mm)
    gaps = np.diff(along)
    regular = along[-1] / (len(along) - 1) * np.arange(len(along))
    uneven = bool(
        np.max(np.abs(gaps - along[-1] / (len(along) - 1))) > slice_tolerance_mm
        or np.max(np.abs(along - regular)) > slice_tolerance_mm
    )
    # dcm2niix nii_saveNII3Deq: the smallest positive gap, capped at twice the slice count.
    step = float(gaps.min())
    n_out = math.ceil((along[-1] - 0.5 * (along[-1] - along[-2])) / step) if uneven else len(along)
    if uneven and n_out > 2 * len(along):
        n_out = 2 * len(along)
        step = float(along[-1] / (n_out - 1))
    if not uneven:
        step = float(along[-1] / (len(along) - 1))
    extend = [math.ceil(float(np.max(np.abs(drift[:, a]))) - 1e-9) if tilted else 0 for a in (0, 1)]
    before = tuple(
        extend[a] if tilted and drift[-1, a] < 0 else 0 for a in (0, 1)
    )  # drift toward -axis: the new rows come before row 0
    shape = (first.rows + extend[0], first.columns + extend[1], n_out)
    origin = positions[0] - before[0] * ps[0] * col_dir - before[1] * ps[1] * row_dir
    affine = dicom_affine(iop, origin, ps, normal * step)
    return TiltGrid(
        shape=shape,
        affine=affine,
        slice_mm=step,
        along_mm=along,
        drift_px=drift,
        offset_px=(int(before[0]), int(before[1])),
        corrections=tuple(c for c, on in zip(CORRECTIONS, (tilted, uneven), strict=True) if on),
        _positions=positions,
        _row_dir=row_dir,
        _col_dir=col_dir,
        _normal=normal,
        _pixel=ps,
    )


def _shift(image: np.ndarray, rows: float, columns: float, shape: tuple[int, int], fill: int):
    """One slice placed on the extended plane, moved by (rows, columns) pixels: linear
    interpolation between neighbouring pixels, rounded half away from zero (C ``round``), pixels
    with no source at ``fill``."""
    out = image.astype(np.float32)
    for axis, shift in ((0, rows), (1, columns)):
        size = out.shape[axis]
        n_out = shape[axis]
        target = np.arange(n_out, dtype=np.float64) - shift  # source coordinate of each output
        # dcm2niix shifts rows after flipping them (NIfTI j runs from the last row up), so a
        # source row counts from the last one: (-1, size - 1] has a source, and between -1 and
        # 0 it is row 0 alone (its "upper" neighbour clamped). Columns are never flipped.
        if axis == 0:
            valid = (target > -1) & (target <= size - 1)
            lo = np.clip(np.floor(target).astype(np.int64), 0, size - 1)
            hi = np.where(target < 0, 0, np.minimum(lo + 1, size - 1))
            frac = np.where(target < 0, 0.0, target - np.floor(target)).astype(np.float32)
        else:
            valid = (target >= 0) & (target < size)
            lo = np.clip(np.floor(target).astype(np.int64), 0, size - 1)
            hi = np.minimum(lo + 1, size - 1)
            frac = (target - np.floor(target)).astype(np.float32)
        a = np.take(out, lo, axis=axis)
        b = np.take(out, hi, axis=axis)
        f = frac.reshape((-1, 1) if axis == 0 else (1, -1))
        moved = a * (1 - f) + b * f
        mask = valid.reshape((-1, 1) if axis == 0 else (1, -1))
        out = np.where(mask, moved, np.float32(fill))
    return _round(out)


def _round(values: np.ndarray) -> np.ndarray:
    # C round(): halves away from zero (numpy's rint rounds halves to even).
    return (np.sign(values) * np.floor(np.abs(values) + 0.5)).astype(np.int16)


def iter_resampled(
    grid: TiltGrid,
    read_slice: Callable[[int], np.ndarray],
    fill: int,
    slab: int = 16,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first slice, int16 array[row, column, slices])`` slabs of the resampled volume.

    Parameters
    ----------
    grid
        From :func:`tilt_grid`.
    read_slice
        Position-sorted input slice index -> its ``[row, column]`` HU (int16); called in
        increasing order, each slice at most once.
    fill
        Value where no acquired pixel lies (dcm2niix: the lowest value of the series).
    slab
        Output slices per yielded slab.
    """
    plane = grid.shape[:2]
    along = grid.along_mm.astype(np.float32)
    cache: dict[int, np.ndarray] = {}

    def corrected(i: int) -> np.ndarray:
        if i not in cache:
            for old in [k for k in cache if k < i - 1]:
                del cache[old]  # slices are needed in increasing order: keep two
            rows, cols = grid.drift_px[i]
            cache[i] = _shift(
                read_slice(i),
                float(rows) + grid.offset_px[0],
                float(cols) + grid.offset_px[1],
                plane,
                fill,
            )
        return cache[i]

    step = np.float32(grid.slice_mm)
    n_in = len(along)
    for k0 in range(0, grid.shape[2], slab):
        out = np.empty((*plane, min(slab, grid.shape[2] - k0)), dtype=np.int16)
        for j in range(out.shape[2]):
            x = np.float32(k0 + j) * step
            hi = int(np.searchsorted(along, x, side="left"))
            hi = min(hi, n_in - 1)
            lo = max(hi - 1, 0)
            if along[hi] == along[lo] or x > along[hi]:
                out[:, :, j] = corrected(hi)
                continue
            f = np.float32((x - along[lo]) / (along[hi] - along[lo]))
            a, b = corrected(lo), corrected(hi)
            out[:, :, j] = _round(a.astype(np.float32) * (1 - f) + b.astype(np.float32) * f)
        yield k0, out
