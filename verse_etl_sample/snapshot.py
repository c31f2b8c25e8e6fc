"""``*_seg-vert_snp.png`` look-alikes: sagittal and coronal CT projections with a mask overlay.

The real snapshots (VERSE.md §5) are RGBA PNGs at 96 dpi showing a lateral projection with
centroid dots next to sagittal and coronal views. This module builds the same kind of picture
from slabs as they are written, so no whole volume is needed: maximum-intensity projections of
the CT (bone window) along the left-right and anterior-posterior axes, the maximum label along
the same rays as a coloured overlay, and a white dot at every centroid. Display convention:
superior up; anterior left in the sagittal panel; patient right on the left in the coronal panel.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
from nibabel.orientations import aff2axcodes
from PIL import Image, ImageDraw

# Bone window for the projections (a MIP is dominated by bone anyway).
WINDOW = (-200.0, 1300.0)


def _palette() -> np.ndarray:
    colours = np.zeros((256, 3), dtype=np.uint8)
    for label in range(1, 256):
        r, g, b = colorsys.hsv_to_rgb((label * 0.137) % 1.0, 0.85, 1.0)
        colours[label] = (int(r * 255), int(g * 255), int(b * 255))
    return colours


class SnapshotBuilder:
    """Accumulate projections slab by slab, then render the PNG.

    Parameters
    ----------
    shape
        Volume shape.
    affine
        4x4 voxel -> RAS+ mm (orientation and spacing of the panels).
    """

    def __init__(self, shape: tuple[int, int, int], affine: np.ndarray) -> None:
        self.shape = shape
        self.affine = np.asarray(affine, dtype=float)
        self.codes = aff2axcodes(self.affine)
        self.spacing = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        self.axis_lr = next(i for i, c in enumerate(self.codes) if c in "LR")
        self.axis_ap = next(i for i, c in enumerate(self.codes) if c in "AP")
        self.axis_si = next(i for i, c in enumerate(self.codes) if c in "SI")
        self._proj: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for axis in (self.axis_lr, self.axis_ap):
            rest = tuple(n for i, n in enumerate(shape) if i != axis)
            self._proj[axis] = (
                np.full(rest, -1024, dtype=np.int16),
                np.zeros(rest, dtype=np.uint8),
            )

    def add(self, k0: int, hu: np.ndarray, label: np.ndarray) -> None:
        """Fold in voxels ``[:, :, k0:k0 + depth]``."""
        k1 = k0 + hu.shape[2]
        for axis, (p_hu, p_lab) in self._proj.items():
            if axis == 2:
                np.maximum(p_hu, hu.max(axis=2), out=p_hu)
                np.maximum(p_lab, label.max(axis=2), out=p_lab)
            else:
                p_hu[:, k0:k1] = hu.max(axis=axis)
                p_lab[:, k0:k1] = label.max(axis=axis)

    def _panel(self, axis: int, centroids: np.ndarray) -> Image.Image:
        p_hu, p_lab = self._proj[axis]
        rest = [i for i in range(3) if i != axis]
        across = rest[0] if rest[1] == self.axis_si else rest[1]
        # Rows = superior-inferior axis, columns = the other one.
        order = (rest.index(self.axis_si), rest.index(across))
        img_hu, img_lab = p_hu.transpose(order), p_lab.transpose(order)
        flip_rows = self.codes[self.axis_si] == "S"
        flip_cols = self.codes[across] in ("A", "R")
        if flip_rows:
            img_hu, img_lab = img_hu[::-1], img_lab[::-1]
        if flip_cols:
            img_hu, img_lab = img_hu[:, ::-1], img_lab[:, ::-1]
        lo, hi = WINDOW
        grey = (np.clip((img_hu.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
        colour = _palette()[img_lab].astype(np.float32)
        on = img_lab > 0
        rgb[on] = 0.55 * rgb[on] + 0.45 * colour[on]
        rgba = np.dstack([rgb.astype(np.uint8), np.full(grey.shape, 255, dtype=np.uint8)])
        image = Image.fromarray(rgba, mode="RGBA")
        # One pixel per millimetre, so anisotropic voxels look right.
        sp_rows, sp_cols = self.spacing[self.axis_si], self.spacing[across]
        size = (max(1, round(grey.shape[1] * sp_cols)), max(1, round(grey.shape[0] * sp_rows)))
        image = image.resize(size, Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(image)
        for c in centroids:
            row, col = c[self.axis_si], c[across]
            if flip_rows:
                row = self.shape[self.axis_si] - 1 - row
            if flip_cols:
                col = self.shape[across] - 1 - col
            y, x = (row + 0.5) * sp_rows, (col + 0.5) * sp_cols
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(255, 255, 255, 255))
        return image

    def png_bytes(self, centroids_voxel: np.ndarray) -> bytes:
        """Render the snapshot.

        Parameters
        ----------
        centroids_voxel
            (n, 3) voxel coordinates of the centroids, drawn as dots.

        Returns
        -------
        bytes
            An RGBA PNG (96 dpi): sagittal panel left, coronal panel right.
        """
        pts = np.asarray(centroids_voxel, dtype=float).reshape(-1, 3)
        sagittal = self._panel(self.axis_lr, pts)
        coronal = self._panel(self.axis_ap, pts)
        width = sagittal.width + coronal.width + 8
        height = max(sagittal.height, coronal.height)
        canvas = Image.new("RGBA", (width, height), (0, 0, 0, 255))
        canvas.paste(sagittal, (0, 0))
        canvas.paste(coronal, (sagittal.width + 8, 0))
        buf = io.BytesIO()
        canvas.save(buf, format="PNG", dpi=(96, 96))
        return buf.getvalue()
