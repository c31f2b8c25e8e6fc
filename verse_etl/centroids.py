"""VerSe vertebra centroid files -> centroids in the image's voxel and world (RAS mm) coordinates.

Subject-based format (``*_seg-subreg_ctd.json``, older ``*_seg-vb_ctd.json``)::

    [{"direction": ["P", "I", "R"]}, {"label": 16, "X": 79.1, "Y": 40.9, "Z": 32.3}, ...]

``X, Y, Z`` are 0-based voxel indices along the axes named by ``direction`` (nibabel axis codes
of the image they were computed on). If those codes differ from the image's own, the coordinates
are permuted and flipped onto the image's axes (flip as ``n - 1 - x``, the correct inverse of a
voxel-index flip). Entries holding NaN are kept out and reported, as the official loader skips
them silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verse_etl.errors import InputError
from verse_etl.geometry import apply_affine, reorder_to


@dataclass(frozen=True)
class Centroid:
    """One vertebra centroid in the image's array axes (voxel) and in RAS+ mm (world)."""

    label: int
    voxel: tuple[float, float, float]
    world: tuple[float, float, float]


@dataclass(frozen=True)
class CentroidFile:
    """A parsed centroid file; ``skipped`` lists entries left out, with the reason."""

    path: Path
    direction: str
    centroids: tuple[Centroid, ...]
    skipped: tuple[str, ...]


def read_centroids(
    path: Path, shape: tuple[int, int, int], affine: np.ndarray, image_codes: str
) -> CentroidFile:
    """Read a subject-based centroid file and express it on the image's grid.

    Parameters
    ----------
    path
        The ``*_ctd.json`` file.
    shape, affine, image_codes
        Shape, voxel->RAS affine and axis codes of the image (or mask) the centroids belong to.

    Raises
    ------
    InputError
        If the file is not JSON, is not a list whose first element is a direction, or has
        entries without a numeric label and X/Y/Z.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(
            path, f"not valid JSON ({e})", "re-download the file", check="centroid_json"
        ) from e
    if (
        not isinstance(data, list)
        or not data
        or not isinstance(data[0], dict)
        or "direction" not in data[0]
    ):
        raise InputError(
            path,
            'expected a list whose first element is {"direction": [...]}',
            "this is not a subject-based VerSe centroid file",
            check="centroid_json",
        )
    direction = data[0]["direction"]
    if not (
        isinstance(direction, list)
        and len(direction) == 3
        and all(isinstance(c, str) for c in direction)
    ):
        raise InputError(
            path, f"direction must be three axis codes, got {direction!r}", check="centroid_json"
        )
    codes = "".join(direction).upper()
    try:
        source_axis, flip = reorder_to(codes, image_codes)
    except ValueError as e:
        raise InputError(
            path,
            f"direction {codes} cannot be matched to the image axes {image_codes}",
            "check that the file belongs to this image",
            check="centroid_direction",
        ) from e
    centroids: list[Centroid] = []
    skipped: list[str] = []
    for n, entry in enumerate(data[1:], start=1):
        if not isinstance(entry, dict) or not {"label", "X", "Y", "Z"} <= set(entry):
            raise InputError(
                path,
                f"entry {n} is not {{label, X, Y, Z}} (got {json.dumps(entry)[:80]})",
                check="centroid_json",
            )
        try:
            label = int(entry["label"])
            xyz = [float(entry[k]) for k in ("X", "Y", "Z")]
        except (TypeError, ValueError) as e:
            raise InputError(
                path, f"entry {n} has non-numeric values ({e})", check="centroid_json"
            ) from e
        if not all(math.isfinite(v) for v in xyz):
            skipped.append(f"entry {n} (label {label}) holds NaN")
            continue
        voxel = tuple(
            (shape[t] - 1 - xyz[source_axis[t]]) if flip[t] else xyz[source_axis[t]]
            for t in range(3)
        )
        world = apply_affine(affine, [voxel])[0]
        centroids.append(
            Centroid(label=label, voxel=voxel, world=tuple(float(v) for v in world))  # type: ignore[arg-type]
        )
    return CentroidFile(
        path=path, direction=codes, centroids=tuple(centroids), skipped=tuple(skipped)
    )
