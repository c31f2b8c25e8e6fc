"""Rows of the ``vertebrae`` table (``schemas/vertebrae.py``): one per vertebra of a VerSe scan,
from its mask's label statistics and its centroid file."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from verse_etl.geometry.affines import apply_affine
from verse_etl.geometry.store_frame import StoreFrame
from verse_etl.io.nifti import NiftiInfo
from verse_etl.levels import VERSE_LEVELS
from verse_etl.schemas.vertebrae import VERTEBRAE
from verse_etl.stores.label_stats import LabelSummary
from verse_etl.verse.centroids import Centroid, CentroidFile

# Checks about a vertebra's centroid; their records name the centroid file, as do those of a
# label only the centroid file lists. Every other vertebra record names the mask.
_CENTROID_CHECKS = frozenset(
    {"centroid_outside_volume", "centroid_outside_label", "centroid_without_mask_label"}
)


def quarantine_file(row: pd.Series, check: str, scan: dict[str, Any]) -> str:
    """The file a quarantine record of a vertebra row names (it has no file column itself):
    the centroid file or the mask of its ``scan`` row, whichever ``check`` is about."""
    about_centroid = check in _CENTROID_CHECKS or (row["in_centroids"] and not row["in_mask"])
    order = ("centroids_path", "mask_path") if about_centroid else ("mask_path", "centroids_path")
    return next((scan[k] for k in (*order, "ct_path") if scan.get(k)), str(row["scan_id"]))


def vertebra_rows(
    scan_id: str,
    ct: NiftiInfo,
    frame: StoreFrame,
    summaries: dict[int, LabelSummary],
    centroids: CentroidFile | None,
    probed: list[int | None],
    min_island_voxels: int,
) -> list[dict[str, Any]]:
    """One row per centroid entry, plus one per mask label without a centroid, by label.

    ``summaries`` are the mask's label statistics, ``probed`` the mask label at each centroid;
    ``frame`` turns the centroids' source voxel coordinates into the store's.
    A label listed twice in the centroid file gives two rows, which the table's uniqueness
    check then rejects, naming both.
    """
    entries: list[tuple[int, Centroid | None, int | None]] = []
    listed = set()
    for centroid, at in zip(centroids.centroids if centroids else (), probed, strict=True):
        entries.append((centroid.label, centroid, at))
        listed.add(centroid.label)
    entries += [(label, None, None) for label in summaries if label not in listed]
    voxel_mm3 = float(abs(np.linalg.det(ct.affine[:3, :3])))
    return [
        VERTEBRAE.row(
            scan_id=scan_id,
            label=label,
            level=VERSE_LEVELS.get(label, f"label{label}"),
            **_centroid(c, at, ct.shape, frame),
            **_mask(summaries.get(label), ct, voxel_mm3, min_island_voxels),
            centroid_to_com_mm=centroid_to_com_mm(c, summaries.get(label), ct.affine),
        )
        for label, c, at in sorted(entries, key=lambda e: e[0])
    ]


def _centroid(
    c: Centroid | None, at: int | None, shape: tuple[int, ...], frame: StoreFrame
) -> dict[str, Any]:
    inside = c is not None and all(-0.5 <= c.voxel[t] <= shape[t] - 0.5 for t in range(3))
    stored = frame.to_store_index([c.voxel])[0] if c else [None, None, None]
    return {
        "in_centroids": c is not None,
        "centroid_i": c.voxel[0] if c else None,
        "centroid_j": c.voxel[1] if c else None,
        "centroid_k": c.voxel[2] if c else None,
        "centroid_store_z": stored[0],
        "centroid_store_y": stored[1],
        "centroid_store_x": stored[2],
        "centroid_x_mm": c.world[0] if c else None,
        "centroid_y_mm": c.world[1] if c else None,
        "centroid_z_mm": c.world[2] if c else None,
        "centroid_in_volume": inside,
        "mask_label_at_centroid": at if inside else None,
    }


def _mask(
    s: LabelSummary | None, ct: NiftiInfo, voxel_mm3: float, min_island_voxels: int
) -> dict[str, Any]:
    com = _world(ct.affine, s.centre_of_mass) if s else [None, None, None]
    islands = [n for n in s.component_sizes if n < min_island_voxels] if s else []
    return {
        "in_mask": s is not None,
        "mask_voxels": s.voxels if s else 0,
        "volume_mm3": (s.voxels if s else 0) * voxel_mm3,
        "bbox_i_min": s.bbox_min[0] if s else None,
        "bbox_i_max": s.bbox_max[0] if s else None,
        "bbox_j_min": s.bbox_min[1] if s else None,
        "bbox_j_max": s.bbox_max[1] if s else None,
        "bbox_k_min": s.bbox_min[2] if s else None,
        "bbox_k_max": s.bbox_max[2] if s else None,
        "com_x_mm": com[0],
        "com_y_mm": com[1],
        "com_z_mm": com[2],
        "n_components": len(s.component_sizes) if s else 0,
        "n_islands": len(islands),
        "island_voxels": int(sum(islands)),
    }


def centroid_to_com_mm(
    c: Centroid | None, s: LabelSummary | None, affine: np.ndarray
) -> float | None:
    """Distance (mm) between a vertebra's centroid and its label's centre of mass; None unless
    both exist.

    Examples
    --------
    >>> from types import SimpleNamespace as Fake
    >>> centroid_to_com_mm(Fake(world=(0.0, 3.0, 0.0)), Fake(centre_of_mass=(0, 0, 4)), np.eye(4))
    5.0
    >>> centroid_to_com_mm(None, Fake(centre_of_mass=(0, 0, 4)), np.eye(4)) is None
    True
    """
    if c is None or s is None:
        return None
    return float(np.linalg.norm(np.subtract(c.world, _world(affine, s.centre_of_mass))))


def _world(affine: np.ndarray, voxel: tuple[float, float, float]) -> list[float]:
    return [float(v) for v in apply_affine(affine, [voxel])[0]]
