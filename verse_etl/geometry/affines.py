"""Pure affine, orientation and spacing helpers.

Conventions: every affine here maps 0-based voxel indices ``(i, j, k)`` of an array *as stored* to
world coordinates in millimetres in **RAS+** (+x toward the patient's Right, +y Anterior,
+z Superior), as NIfTI and nibabel do. DICOM patient coordinates are **LPS+** (+x Left,
+y Posterior, +z Superior); the conversion is ``RAS = diag(-1, -1, 1) @ LPS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Multiply a DICOM (LPS+) 4x4 affine on the left by this to get a RAS+ affine."""

_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}


def axcodes(affine: np.ndarray) -> str:
    """Return the orientation codes of the voxel axes as one string, e.g. ``"PIR"``.

    Each letter names the world direction toward which the voxel index increases.

    Examples
    --------
    >>> axcodes(np.diag([-1.0, -1.0, 1.0, 1.0]))
    'LPS'
    """
    # Imported here: the series contract (schemas/series.py) imports this package for its
    # verdict names, and importing a contract must not load nibabel.
    from nibabel.orientations import aff2axcodes

    return "".join(aff2axcodes(np.asarray(affine, dtype=float)))


def spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Return the voxel size in mm along each array axis (column norms of the 3x3 part).

    Examples
    --------
    >>> spacing(np.diag([0.5, 0.5, 2.0, 1.0]))
    (0.5, 0.5, 2.0)
    """
    a = np.asarray(affine, dtype=float)[:3, :3]
    return tuple(float(v) for v in np.linalg.norm(a, axis=0))  # type: ignore[return-value]  # a tuple of 3 (one per axis): tuple() of a generator is typed variable-length


def apply_affine(affine: np.ndarray, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Map an ``(n, 3)`` array of voxel coordinates through a 4x4 affine.

    Examples
    --------
    >>> apply_affine(np.diag([2.0, 2.0, 2.0, 1.0]), [[1, 2, 3]]).tolist()
    [[2.0, 4.0, 6.0]]
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    a = np.asarray(affine, dtype=float)
    return pts @ a[:3, :3].T + a[:3, 3]


def is_valid_affine(affine: np.ndarray) -> bool:
    """True if the affine is finite, has a non-singular 3x3 part and a ``[0, 0, 0, 1]`` last row."""
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        return False
    if not np.allclose(a[3], [0, 0, 0, 1]):
        return False
    return abs(float(np.linalg.det(a[:3, :3]))) > 1e-9


def reorder_to(codes_from: str, codes_to: str) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """How to express coordinates given along axes ``codes_from`` along axes ``codes_to``.

    Returns ``(source_axis, flip)`` per target axis: target axis ``t`` takes the value of source
    axis ``source_axis[t]``, reversed if ``flip[t]``.

    Raises
    ------
    ValueError
        If the two sets of codes do not describe the same three anatomical axes.

    Examples
    --------
    >>> reorder_to("LPS", "PIR")
    ((1, 2, 0), (False, True, True))
    """
    if len(codes_from) != 3 or len(codes_to) != 3:
        raise ValueError(f"expected three axis codes each, got {codes_from!r} and {codes_to!r}")
    source_axis: list[int] = []
    flip: list[bool] = []
    for code in codes_to:
        if code in codes_from:
            source_axis.append(codes_from.index(code))
            flip.append(False)
        elif _OPPOSITE.get(code, "?") in codes_from:
            source_axis.append(codes_from.index(_OPPOSITE[code]))
            flip.append(True)
        else:
            raise ValueError(f"axis codes {codes_from!r} and {codes_to!r} do not match")
    if sorted(source_axis) != [0, 1, 2]:
        raise ValueError(f"axis codes {codes_from!r} and {codes_to!r} do not match")
    return tuple(source_axis), tuple(flip)


def dicom_affine(
    orientation: ArrayLike,
    first_position: ArrayLike,
    pixel_spacing: ArrayLike,
    slice_step: ArrayLike,
) -> np.ndarray:
    """RAS+ affine of a DICOM volume stored as ``array[row, column, slice]``.

    Parameters
    ----------
    orientation
        ImageOrientationPatient: direction cosines (LPS) of a row (the direction in which the
        *column* index grows), then of a column (the direction in which the *row* index grows).
    first_position
        ImagePositionPatient (LPS mm) of the slice at array index 0.
    pixel_spacing
        PixelSpacing: ``[spacing between rows, spacing between columns]`` in mm.
    slice_step
        LPS vector in mm from slice ``k`` to slice ``k + 1`` (not assumed to be along the normal,
        so a gantry tilt stays visible in the affine).

    Examples
    --------
    >>> a = dicom_affine([1, 0, 0, 0, 1, 0], [-100, -120, 50], [0.5, 0.7], [0, 0, -1.25])
    >>> a[:3].round(3).tolist()
    [[0.0, -0.7, 0.0, 100.0], [-0.5, 0.0, 0.0, 120.0], [0.0, 0.0, -1.25, 50.0]]
    """
    iop = np.asarray(orientation, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    lps = np.eye(4)
    spacing = np.asarray(pixel_spacing, dtype=float)
    lps[:3, 0] = col_dir * spacing[0]  # row index i moves down a column
    lps[:3, 1] = row_dir * spacing[1]  # column index j moves along a row
    lps[:3, 2] = np.asarray(slice_step, dtype=float)
    lps[:3, 3] = np.asarray(first_position, dtype=float)
    return LPS_TO_RAS @ lps
