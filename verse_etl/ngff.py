"""OME-NGFF 0.5 metadata of the volume stores: multiscale images and label images.

Spec: https://ngff.openmicroscopy.org/0.5/ (``ome`` attributes of Zarr v3 groups: ``multiscales``,
``labels``, ``image-label``). Every store passes ome-zarr-models (v05, warnings as errors),
ome-zarr-py's reader and ngff-zarr's JSON-Schema validation (tests/e2e/test_ngff_readers.py).

Frames, and why
---------------
NGFF 0.5 knows only per-axis ``scale`` and ``translation``: no rotation, no axis permutation (NGFF
0.6 adds them, RFC-5, but the readers above and napari-ome-zarr show 0.5 stores). So the arrays
themselves are stored the right way up (:mod:`verse_etl.geometry.store_frame`): the source's voxel grid
with its axes permuted and flipped so that array axes 0, 1, 2 (NGFF ``z, y, x``, the Zarr
``dimension_names``) grow toward superior, posterior and the patient's left. napari shows axis 0
on the slider and axial slices with anterior up and the patient's right on the viewer's left
(radiological), for axial and sagittal acquisitions alike. No voxel is resampled.

The exact geometry is the root attribute ``verse_etl.affine``: a 4x4 matrix mapping store indices
to RAS+ millimetres (x toward the patient's right, y anterior, z superior), oblique and tilted
grids included; ``verse_etl.source_affine`` is the source's own (tables: ``store_affine`` and
``affine``). With the unit direction columns ``R`` and voxel sizes ``s`` of the store affine
``A = [R diag(s) | o]``, a voxel ``v`` sits at NGFF coordinates ``diag(s) v + R^T o``
(:func:`voxel_frame`), which is ``R^T`` times its RAS+ position when the voxel axes are
orthogonal: the NGFF space is RAS+ turned onto the store axes, exactly the radiological frame
(superior, posterior, left) for a grid aligned with the patient, within the obliquity otherwise.
Distances, voxel sizes and the alignment of the CT with its label image are exact.
:func:`ngff_coordinates` puts RAS+ points (the tables' ``*_mm`` columns) into that NGFF space;
the tables' store-frame voxel columns (``vertebrae.centroid_store_z/y/x``,
``mosmed_vertebrae.*_store_z/y/x``) give it directly as ``scale * index + translation``. Either
way centroids overlay the CT and labels in napari exactly, oblique grids included.

For an exactly radiological display of an oblique grid from Python, :func:`display_affine`
gives napari (or any viewer taking a 4x4 per layer) the exact store-index -> display transform
with axes superior, posterior, patient's left, and :func:`display_points` the tables' RAS+
points in that frame::

    frame = display_affine(case.affine)
    viewer.add_image(case.image, affine=frame)
    viewer.add_labels(case.mask, affine=frame)
    viewer.add_points(display_points(case.vertebrae[["centroid_x_mm", "centroid_y_mm",
                                                     "centroid_z_mm"]]))
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NGFF_VERSION = "0.5"
NGFF_AXES: tuple[str, str, str] = ("z", "y", "x")
"""NGFF names of store axes 0, 1, 2, also the Zarr ``dimension_names`` of every array, as NGFF
0.5 requires them to match. NGFF readers (ngff-zarr, napari) expect 3-D space axes to be called
``z, y, x`` in array order. In the store frame they grow toward superior, posterior and the
patient's left (nearest axes: :mod:`verse_etl.geometry.store_frame`)."""

PYRAMID_METHOD = "nearest"
"""How levels 1, 2, ... are made: every second voxel along each axis of the level above."""


def voxel_frame(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a 4x4 voxel-to-RAS+ affine into unit axis directions, voxel sizes and NGFF origin.

    Returns
    -------
    directions : ndarray
        3x3, column ``a`` the unit RAS+ direction in which index ``a`` grows.
    spacing : ndarray
        Voxel size in mm along each array axis.
    translation : ndarray
        NGFF translation ``R^T o``: the origin measured along each axis direction.

    Examples
    --------
    >>> d, s, t = voxel_frame(np.array([[-0.5, 0, 0, 90], [0, -0.5, 0, 120], [0, 0, 2, -40],
    ...                                 [0, 0, 0, 1.0]]))
    >>> s.tolist(), t.tolist()
    ([0.5, 0.5, 2.0], [-90.0, -120.0, -40.0])
    """
    a = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    directions = a[:3, :3] / spacing
    return directions, spacing, directions.T @ a[:3, 3]


def ngff_coordinates(
    affine: np.ndarray, points_ras: np.ndarray | Sequence[Sequence[float]]
) -> np.ndarray:
    """NGFF (viewer) coordinates, in ``z, y, x`` order, of ``(n, 3)`` RAS+ points in mm.

    The inverse affine takes each point to (fractional) stored indices ``v``; the NGFF position
    of index ``v`` is ``diag(s) v + t`` with the scale and translation of level 0 written by
    :func:`multiscale`. Points given this way (e.g. ``vertebrae.centroid_*_mm`` as a napari
    Points layer) land on the same voxels as in the CT and label images, oblique grids included.

    Examples
    --------
    >>> a = np.array([[-0.5, 0, 0, 90], [0, -0.5, 0, 120], [0, 0, 2, -40], [0, 0, 0, 1.0]])
    >>> ngff_coordinates(a, [[90.0, 120.0, -40.0], [89.5, 119.0, -36.0]]).tolist()
    [[-90.0, -120.0, -40.0], [-89.5, -119.0, -36.0]]
    """
    a = np.asarray(affine, dtype=float)
    _, spacing, translation = voxel_frame(a)
    pts = np.asarray(points_ras, dtype=float).reshape(-1, 3)
    voxels = np.linalg.solve(a[:3, :3], (pts - a[:3, 3]).T).T
    return voxels * spacing + translation


RADIOLOGICAL = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
"""RAS+ mm -> display mm with axes (slider, screen row, screen column) = (superior, posterior,
patient's left): axial slices in radiological convention (anterior up, the patient's right on
the viewer's left), as napari shows its last two world axes."""


def display_affine(affine: np.ndarray) -> np.ndarray:
    """4x4 stored indices -> display mm in radiological orientation (:data:`RADIOLOGICAL`).

    Exact for every grid (oblique and sheared ones too): pass it as the ``affine`` of a napari
    image or labels layer, and :func:`display_points` of the same RAS+ points to a points layer.

    Examples
    --------
    >>> lps = np.diag([-0.5, -0.5, 2.0, 1.0])  # DICOM-like: rows to P, columns to L, slices to S
    >>> display_affine(lps)[:3, :3].tolist()
    [[0.0, 0.0, 2.0], [0.0, 0.5, 0.0], [0.5, 0.0, 0.0]]
    """
    a = np.asarray(affine, dtype=float)
    out = np.eye(4)
    out[:3] = RADIOLOGICAL @ a[:3]
    return out


def display_points(points_ras: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``(n, 3)`` RAS+ mm -> display mm (:data:`RADIOLOGICAL`), e.g. the tables' centroids.

    Examples
    --------
    >>> display_points([[10.0, 20.0, 30.0]]).tolist()
    [[30.0, -20.0, -10.0]]
    """
    return np.asarray(points_ras, dtype=float).reshape(-1, 3) @ RADIOLOGICAL.T


def level_shapes(shape: Sequence[int], levels: int) -> list[tuple[int, int, int]]:
    """Shapes of pyramid levels 0..``levels``: each keeps every second voxel of the one above.

    Examples
    --------
    >>> level_shapes((512, 512, 229), 2)
    [(512, 512, 229), (256, 256, 115), (128, 128, 58)]
    """
    shapes = [tuple(int(n) for n in shape)]
    for _ in range(levels):
        shapes.append(tuple(-(-n // 2) for n in shapes[-1]))
    return shapes  # type: ignore[return-value]  # tuples of 3 (one per axis), typed variable-length


def multiscale(name: str, affine: np.ndarray, levels: int) -> dict[str, Any]:
    """One ``multiscales`` entry for datasets ``"0"``..``str(levels)`` of a group.

    Level ``l`` keeps every ``2**l``-th voxel, so its voxel ``m`` is voxel ``m * 2**l`` of level
    0: the scale doubles per level and the translation stays that of level 0.
    """
    _, spacing, translation = voxel_frame(affine)
    return {
        "name": name,
        "axes": [{"name": axis, "type": "space", "unit": "millimeter"} for axis in NGFF_AXES],
        "datasets": [
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [float(s) * 2**level for s in spacing]},
                    {"type": "translation", "translation": [float(t) for t in translation]},
                ],
            }
            for level in range(levels + 1)
        ],
        "type": PYRAMID_METHOD,
        "metadata": {
            "method": "numpy slicing [::2, ::2, ::2] of the level above",
            "frame": "RAS+ mm turned onto the store axes (translation = R^T origin): z, y, x "
            "toward superior, posterior, patient's left; the exact affine is in the verse_etl "
            "attributes of the store root",
        },
    }


def image_attributes(name: str, affine: np.ndarray, levels: int) -> dict[str, Any]:
    """``ome`` attributes of a multiscale image group."""
    return {"ome": {"version": NGFF_VERSION, "multiscales": [multiscale(name, affine, levels)]}}


def labels_group_attributes(names: Sequence[str]) -> dict[str, Any]:
    """``ome`` attributes of the ``labels`` group that lists the label images."""
    return {"ome": {"version": NGFF_VERSION, "labels": list(names)}}


def label_color(value: int) -> list[int]:
    """A stable, distinct RGBA colour per label value (golden-angle hues).

    Examples
    --------
    >>> label_color(1), label_color(1) == label_color(2)
    ([255, 0, 0, 255], False)
    """
    hue = ((value - 1) * 0.381966) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 1.0, 1.0)
    return [round(r * 255), round(g * 255), round(b * 255), 255]


def label_image_attributes(
    name: str, affine: np.ndarray, levels: int, label_names: Mapping[int, str]
) -> dict[str, Any]:
    """``ome`` attributes of a label image: multiscales plus ``image-label`` with level names.

    ``properties`` carry each value's name as ``level`` (e.g. ``{"label-value": 20,
    "level": "L1"}``); ``source`` points back at the image two groups up.
    """
    values = sorted(int(v) for v in label_names)
    return {
        "ome": {
            "version": NGFF_VERSION,
            "multiscales": [multiscale(name, affine, levels)],
            "image-label": {
                "colors": [{"label-value": v, "rgba": label_color(v)} for v in values],
                "properties": [{"label-value": v, "level": label_names[v]} for v in values],
                "source": {"image": "../../"},
            },
        }
    }
