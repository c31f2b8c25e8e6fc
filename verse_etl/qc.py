"""QC pictures, in the spirit of VerSe's own ``*_seg-vert_snp.png``, drawn from the Zarr stores.

VerSe: a sagittal and a coronal slice through the spine (bone window) with the vertebra labels
overlaid and each centroid marked with its level name. MosMed: the annotated sagittal slice with
every expert's keypoints and the three height segments of each vertebra.

Pictures are drawn from the coarsest pyramid level that still has at least ``min_size`` voxels
along its longest axis (level 0 when the store has no pyramid), so they stay cheap for any scan
size. Views are reoriented to RAS so that every scan shows head up, anterior left (sagittal) and
the patient's right on the left (coronal), with the voxel spacing respected.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from nibabel.orientations import apply_orientation, io_orientation
from PIL import Image, ImageDraw

from verse_etl.volumes import IMAGE_PATH, LABELS_PATH

WINDOW = (-450.0, 1350.0)  # bone window (HU): centre 450, width 1800
PIXEL_MM = 1.0  # output pixel size of the pictures


def _level(store: Path, min_size: int) -> tuple[str, str]:
    """Image and label paths of the coarsest level with at least ``min_size`` voxels."""
    group = zarr.open_group(store, mode="r")
    levels = sorted((int(k) for k in group.array_keys() if k.isdigit()), reverse=True)
    for level in levels:
        if max(group[str(level)].shape) >= min_size:
            break
    else:
        level = 0
    image = str(level)
    labels = LABELS_PATH.rsplit("/", 1)[0] + f"/{level}"
    return image, labels


def _window(hu: np.ndarray) -> np.ndarray:
    lo, hi = WINDOW
    return (np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def label_color(label: int) -> tuple[int, int, int]:
    """A stable, distinct colour per label."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _overlay(gray: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    if labels is not None:
        for label in np.unique(labels):
            if label == 0:
                continue
            where = labels == label
            rgb[where] = 0.55 * rgb[where] + 0.45 * np.array(label_color(int(label)), np.float32)
    return rgb.astype(np.uint8)


def _resize(rgb: np.ndarray, spacing_xy: tuple[float, float]) -> tuple[Image.Image, float, float]:
    """Resize so that one pixel is PIXEL_MM; return the image and the scale along x and y."""
    h, w = rgb.shape[:2]
    sx, sy = spacing_xy[0] / PIXEL_MM, spacing_xy[1] / PIXEL_MM
    size = (max(1, round(w * sx)), max(1, round(h * sy)))
    return Image.fromarray(rgb).resize(size, Image.Resampling.NEAREST), size[0] / w, size[1] / h


def verse_picture(store: Path, vertebrae: pd.DataFrame, out_png: Path, min_size: int = 128) -> Path:
    """Sagittal + coronal QC picture of one VerSe store with labels and centroids."""
    image_path, labels_path = _level(store, min_size)
    group = zarr.open_group(store, mode="r")
    full_shape = np.array(group[IMAGE_PATH].shape, dtype=float)
    image = np.asarray(group[image_path])
    labels = np.asarray(group[labels_path]) if labels_path in group else None
    factor = full_shape / np.array(image.shape, dtype=float)
    affine = np.asarray(group.attrs["verse_etl"]["affine"], dtype=float)
    ornt = io_orientation(affine)
    ras_image = apply_orientation(image, ornt)
    ras_labels = apply_orientation(labels, ornt) if labels is not None else None
    spacing = np.linalg.norm(affine[:3, :3], axis=0) * factor
    ras_spacing = [spacing[int(axis)] for axis, _ in ornt]
    ras_shape = ras_image.shape

    points = []
    for row in vertebrae.itertuples():
        if pd.isna(getattr(row, "centroid_i", np.nan)):
            continue
        voxel = np.array([row.centroid_i, row.centroid_j, row.centroid_k]) / factor
        ras = [0.0, 0.0, 0.0]
        for src, (axis, flip) in enumerate(ornt):
            value = voxel[src]
            ras[int(axis)] = (image.shape[src] - 1 - value) if flip < 0 else value
        points.append((ras, str(row.level), int(row.label)))
    centre = np.mean([p[0] for p in points], axis=0) if points else np.array(ras_shape) / 2

    panels = []
    for axis in (0, 1):  # 0: sagittal (fixed x), 1: coronal (fixed y)
        index = int(np.clip(round(centre[axis]), 0, ras_shape[axis] - 1))
        gray = np.take(ras_image, index, axis=axis)  # (other in-plane axis, z)
        lab = np.take(ras_labels, index, axis=axis) if ras_labels is not None else None
        # Rows: z from superior (top) down; columns: anterior or patient's right on the left.
        view = np.flip(np.flip(gray.T, axis=0), axis=1)
        lab_view = np.flip(np.flip(lab.T, axis=0), axis=1) if lab is not None else None
        other = 1 if axis == 0 else 0
        picture, kx, ky = _resize(
            _overlay(_window(view), lab_view), (ras_spacing[other], ras_spacing[2])
        )
        draw = ImageDraw.Draw(picture)
        for ras, level, label in points:
            x = (ras_shape[other] - 1 - ras[other] + 0.5) * kx
            y = (ras_shape[2] - 1 - ras[2] + 0.5) * ky
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=label_color(label), outline=(0, 0, 0))
            draw.text((x + 6, y - 6), level, fill=(255, 255, 255))
        panels.append(picture)
    return _save_side_by_side(panels, out_png)


def mosmed_picture(store: Path, keypoints: pd.DataFrame, out_png: Path) -> Path:
    """The annotated sagittal slice of one MosMed series with keypoints and height segments."""
    group = zarr.open_group(store, mode="r")
    image = group[IMAGE_PATH]
    affine = np.asarray(group.attrs["verse_etl"]["affine"], dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    cols = [c for c in keypoints.columns if c.endswith("_col")]
    column = int(np.median(keypoints[cols].to_numpy())) if len(keypoints) else image.shape[1] // 2
    sagittal = np.asarray(image[:, column, :])  # (row: anterior -> posterior, slice: feet -> head)
    view = np.flip(sagittal.T, axis=0)  # head at the top, anterior on the left
    picture, kx, ky = _resize(_overlay(_window(view), None), (spacing[0], spacing[2]))
    draw = ImageDraw.Draw(picture)
    n_slices = image.shape[2]
    experts = sorted(keypoints["expert"].unique()) if len(keypoints) else []
    for row in keypoints.itertuples():
        color = label_color(experts.index(row.expert) * 5 + 3)
        for name in ("ant", "mid", "post"):
            ends = []
            for end in ("sup", "inf"):
                r = getattr(row, f"{name}_{end}_row")
                s = getattr(row, f"{name}_{end}_slice", None)
                if s is None or pd.isna(
                    s
                ):  # no store slice index: InstanceNumber runs head to feet
                    s = n_slices - 1 - getattr(row, f"{name}_{end}_k")
                ends.append(((r + 0.5) * kx, (n_slices - 1 - s + 0.5) * ky))
            draw.line(ends, fill=color, width=1)
            for x, y in ends:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=color)
    return _save_side_by_side([picture], out_png)


def _save_side_by_side(panels: list[Image.Image], out_png: Path) -> Path:
    width = sum(p.width for p in panels) + 8 * (len(panels) - 1)
    height = max(p.height for p in panels)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + 8
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(out_png.name + ".tmp.png")
    canvas.save(tmp, format="PNG", optimize=False)
    tmp.replace(out_png)
    return out_png
