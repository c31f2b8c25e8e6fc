"""A mask stored in another orientation than its image, on the same grid: align it losslessly.

VerSe'19 MICCAI ``verse201`` (VERSE.md, known issue 1) ships image and mask with different
orientations. When the two affines describe the same voxel grid up to the order and direction of
the axes (a signed permutation: no resampling, no rotation), the mask is the image's grid with
its array axes transposed and flipped, and can be brought into the image's axis order voxel for
voxel. Anything else (another grid, a rotation, a shift) is not a reorientation and stays
refused by the geometry check.

The mask is read slab by slab in the image's slice order through nibabel's array proxy, so memory
stays bounded by one slab whatever the mask size (a gzip mask is then inflated once per slab).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from verse_etl.geometry.affines import apply_affine


@dataclass(frozen=True)
class AxisMap:
    """How a mask's array axes map onto the image's.

    ``axes[a]`` is the mask axis that runs along image axis ``a``; ``flips[a]`` whether it runs
    the other way. Image voxel ``(i, j, k)`` is mask voxel ``m`` with
    ``m[axes[a]] = index[a]`` (or ``shape[a] - 1 - index[a]`` when flipped).
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def is_identity(self) -> bool:
        """No reordering needed."""
        return self.axes == (0, 1, 2) and not any(self.flips)

    def describe(self) -> str:
        """E.g. ``mask axes (1, 0, 2), flipped along image axes 2``."""
        flipped = [str(a) for a in range(3) if self.flips[a]]
        return f"mask axes {self.axes}" + (
            f", flipped along image axes {', '.join(flipped)}" if flipped else ""
        )


def axis_map(
    image_affine: np.ndarray,
    image_shape: tuple[int, ...],
    mask_affine: np.ndarray,
    mask_shape: tuple[int, ...],
    tolerance_mm: float,
) -> AxisMap | None:
    """The axis map that puts the mask on the image's grid, or None if there is none.

    Every image voxel corner must land within ``tolerance_mm`` of the mask voxel it maps to.

    Examples
    --------
    >>> a = np.diag([2.0, 1.0, 3.0, 1.0])
    >>> b = np.array([[0, 2.0, 0, 0], [-1, 0, 0, 9], [0, 0, 3, 0], [0, 0, 0, 1]])
    >>> axis_map(a, (4, 10, 5), b, (10, 4, 5), 0.01)
    AxisMap(axes=(1, 0, 2), flips=(False, True, False))
    """
    shape = tuple(int(v) for v in image_shape[:3])
    m_shape = tuple(int(v) for v in mask_shape[:3])
    if len(image_shape) < 3 or len(mask_shape) < 3 or sorted(shape) != sorted(m_shape):
        return None
    # Mask voxel of each image voxel: inv(mask) @ image, which must be a signed permutation.
    transform = np.linalg.inv(np.asarray(mask_affine, float)) @ np.asarray(image_affine, float)
    linear = transform[:3, :3]
    axes, flips = [], []
    for a in range(3):
        column = linear[:, a]
        m = int(np.argmax(np.abs(column)))
        axes.append(m)
        flips.append(bool(column[m] < 0))
    if sorted(axes) != [0, 1, 2] or any(shape[a] != m_shape[axes[a]] for a in range(3)):
        return None
    found = AxisMap(tuple(axes), tuple(flips))  # type: ignore[arg-type]  # 3 each: checked just above
    corners = np.array(
        [
            [i, j, k]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ],
        dtype=float,
    )
    mapped = np.array([_mask_index(found, c, shape) for c in corners], dtype=float)
    gap = np.abs(apply_affine(image_affine, corners) - apply_affine(mask_affine, mapped)).max()
    return found if gap <= tolerance_mm else None


def _mask_index(found: AxisMap, index: np.ndarray, shape: tuple[int, ...]) -> list[float]:
    m = [0.0, 0.0, 0.0]
    for a in range(3):
        m[found.axes[a]] = (shape[a] - 1 - index[a]) if found.flips[a] else index[a]
    return m


def iter_aligned_slabs(
    path: Path, found: AxisMap, image_shape: tuple[int, int, int], depth: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(k0, slab)`` of the mask in the image's axis order, ``depth`` image slices each.

    The values are the file's stored values (scaled as nibabel scales them), untouched: the
    slab is a transposed, flipped view of the mask's voxels.
    """
    # A NIfTI file (nibabel types load() as any image format): the reader checked its header.
    proxy = cast(nib.Nifti1Image, nib.load(str(path))).dataobj
    n = image_shape[2]
    for k0 in range(0, n, depth):
        k1 = min(k0 + depth, n)
        index: list[slice] = [slice(None)] * 3
        along = found.axes[2]
        if found.flips[2]:
            index[along] = slice(n - k1, n - k0)
        else:
            index[along] = slice(k0, k1)
        block = np.asanyarray(proxy[tuple(index)])
        block = np.transpose(block, found.axes)  # now in image axis order
        flips = [a for a in range(3) if found.flips[a]]
        if flips:
            block = np.flip(block, axis=tuple(flips))
        yield k0, np.ascontiguousarray(block)
