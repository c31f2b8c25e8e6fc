"""VerSe vertebra centroid files -> centroids in the image's voxel and world (RAS mm) coordinates.

Subject-based format (``*_seg-subreg_ctd.json``, older ``*_seg-vb_ctd.json``; VerSe.md §4)::

    [{"direction": ["P", "I", "R"]}, {"label": 16, "X": 79.1, "Y": 40.9, "Z": 32.3}, ...]

``X, Y, Z`` are 0-based voxel indices along the axes named by ``direction`` (nibabel axis codes
of the image they were computed on). If those codes differ from the image's own, the coordinates
are permuted and flipped onto the image's axes (flip as ``n - 1 - x``, the correct inverse of a
voxel-index flip). Newer TPTBox-written files add keys to element 0 (``zoom``, ``shape``, ...):
they are ignored. Labels >= 256 are TPTBox's ``subregion * 256 + vertebra``: subregion 50 (the
vertebral body, what VerSe's centroids are) is kept as the vertebra label, other subregions are
left out and reported.

MICCAI-challenge format (``verse004_ctd.json`` of VerSe'19, ``GL003_iso-ctd.json`` of VerSe'20):
a plain list of ``{"label", "X", "Y", "Z"}`` without a direction element, in millimetres from the
corner voxel of the image reoriented to fixed axes (Payer's ``preprocess_landmarks.py``):

* VerSe'19 ``_ctd.json``: X toward Inferior, Y toward Posterior, Z toward Left (axes ``IPL``);
* VerSe'20 ``_iso-ctd.json``: X toward Posterior, Y toward Inferior, Z toward Right (``PIR``).

They are divided by the voxel size along the matching image axis and then treated like the
subject-based coordinates with those axis codes. Payer flips with ``size * spacing - x`` (one
voxel beyond the ``n - 1 - x`` used here); the files themselves do not say which is meant, so a
MICCAI centroid may sit up to one voxel from where the organisers put it.

Entries holding NaN are kept out and reported, as the official loader skips them silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verse_etl.errors import InputError
from verse_etl.geometry.affines import apply_affine, reorder_to
from verse_etl.io.files import SourceFile
from verse_etl.io.json_files import read_json
from verse_etl.params import InputLimits

CENTROID_FORMATS: tuple[str, ...] = ("subject", "miccai19", "miccai20")
"""``subject``: voxel indices with a direction element; ``miccai19``/``miccai20``: millimetres."""
MICCAI_AXES: dict[str, str] = {"miccai19": "IPL", "miccai20": "PIR"}
"""Axis codes of the X, Y, Z millimetre coordinates of the MICCAI centroid files."""
BODY_SUBREGION = 50
"""TPTBox subregion of the vertebral body: ``label = 50 * 256 + vertebra`` in docker-format files."""


@dataclass(frozen=True)
class Centroid:
    """One vertebra centroid in the image's array axes (voxel) and in RAS+ mm (world)."""

    label: int
    voxel: tuple[float, float, float]
    world: tuple[float, float, float]


@dataclass(frozen=True)
class CentroidFile:
    """A parsed centroid file; ``skipped`` lists entries left out, with the reason."""

    path: Path | SourceFile
    direction: str
    centroids: tuple[Centroid, ...]
    skipped: tuple[str, ...]
    format: str = "subject"


def read_centroids(
    path: Path | SourceFile,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    image_codes: str,
    fmt: str = "subject",
    limits: InputLimits | None = None,
) -> CentroidFile:
    """Read a centroid file and express it on the image's grid.

    Parameters
    ----------
    path
        The ``*_ctd.json`` file (on disk or in a zip).
    shape, affine, image_codes
        Shape, voxel->RAS affine and axis codes of the image (or mask) the centroids belong to.
    fmt
        One of :data:`CENTROID_FORMATS`.
    limits
        Size and nesting bounds of the file (:class:`~verse_etl.params.InputLimits`).

    Returns
    -------
    CentroidFile
        Centroids in file order (labels may repeat if the file repeats them).

    Raises
    ------
    InputError
        If the file is not JSON, does not have the layout of ``fmt``, or has entries without a
        numeric label and X/Y/Z.
    """
    if fmt not in CENTROID_FORMATS:
        raise ValueError(f"fmt must be one of {CENTROID_FORMATS}, got {fmt!r}")
    source = path if isinstance(path, SourceFile) else SourceFile(Path(path))
    data = read_json(source, limits or InputLimits(), "centroid_json")
    if fmt != "subject":
        return _read_miccai(path, data, shape, affine, image_codes, fmt)
    if (
        not isinstance(data, list)
        or not data
        or not isinstance(data[0], dict)
        or "direction" not in data[0]
    ):
        raise InputError(
            path,
            'expected a list whose first element is {"direction": [...]}',
            "this is not a subject-based VerSe centroid file (a MICCAI-challenge file has no "
            "direction; name it as the MICCAI release does)",
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
    centroids, skipped = _convert_entries(
        path, data[1:], 1, shape, affine, source_axis, flip, scale=(1.0, 1.0, 1.0)
    )
    return CentroidFile(
        path=path, direction=codes, centroids=tuple(centroids), skipped=tuple(skipped)
    )


def _read_miccai(
    path: Path | SourceFile,
    data: object,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    image_codes: str,
    fmt: str,
) -> CentroidFile:
    if not isinstance(data, list) or (
        data and isinstance(data[0], dict) and "direction" in data[0]
    ):
        raise InputError(
            path,
            "expected a plain list of {label, X, Y, Z} (MICCAI-challenge format), got "
            + (
                "a list with a direction element" if isinstance(data, list) else type(data).__name__
            ),
            "a file with a direction element is a subject-based centroid file; name it "
            "*_seg-subreg_ctd.json",
            check="centroid_json",
        )
    codes = MICCAI_AXES[fmt]
    source_axis, flip = reorder_to(codes, image_codes)
    sizes = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    # Millimetres along file axis s -> voxels along the image axis t that it lands on.
    scale = tuple(float(1.0 / sizes[t]) for t in range(3))
    centroids, skipped = _convert_entries(
        path,
        data,
        0,
        shape,
        affine,
        source_axis,
        flip,
        scale=scale,  # type: ignore[arg-type]  # a tuple of 3 (one per axis): tuple() of a generator is typed variable-length
    )
    return CentroidFile(
        path=path, direction=codes, centroids=tuple(centroids), skipped=tuple(skipped), format=fmt
    )


def _convert_entries(
    path: Path | SourceFile,
    entries: list[object],
    first: int,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    source_axis: tuple[int, ...],
    flip: tuple[bool, ...],
    scale: tuple[float, float, float],
) -> tuple[list[Centroid], list[str]]:
    """Entries -> centroids on the image grid; ``scale[t]`` turns file units into voxels."""
    centroids: list[Centroid] = []
    skipped: list[str] = []
    for n, entry in enumerate(entries, start=first):
        if not isinstance(entry, dict) or not {"label", "X", "Y", "Z"} <= set(entry):
            raise InputError(
                path,
                f"entry {n} is not {{label, X, Y, Z}} (got {json.dumps(entry)[:80]})",
                check="centroid_json",
            )
        label = _label(path, n, entry["label"])
        try:
            xyz = [float(entry[k]) for k in ("X", "Y", "Z")]
        except (TypeError, ValueError, OverflowError) as e:
            raise InputError(
                path, f"entry {n} has non-numeric values ({e})", check="centroid_json"
            ) from e
        if any(isinstance(entry[k], bool) for k in ("X", "Y", "Z")):
            raise InputError(
                path,
                f"entry {n} has a boolean coordinate (expected numbers, got "
                f"{[entry[k] for k in ('X', 'Y', 'Z')]})",
                check="centroid_json",
            )
        if not all(math.isfinite(v) for v in xyz):
            skipped.append(f"entry {n} (label {label}) holds NaN")
            continue
        if label >= 256:
            subregion, label = divmod(label, 256)
            if subregion != BODY_SUBREGION:
                skipped.append(
                    f"entry {n} is the centroid of subregion {subregion} of label {label}, "
                    f"not of the vertebral body ({BODY_SUBREGION})"
                )
                continue
        voxel = tuple(
            (shape[t] - 1 - xyz[source_axis[t]] * scale[t])
            if flip[t]
            else xyz[source_axis[t]] * scale[t]
            for t in range(3)
        )
        world = apply_affine(affine, [voxel])[0]
        centroids.append(
            Centroid(label=label, voxel=voxel, world=tuple(float(v) for v in world))  # type: ignore[arg-type]  # a tuple of 3 (one per axis): tuple() of a generator is typed variable-length
        )
    return centroids, skipped


def _label(path: Path | SourceFile, n: int, value: object) -> int:
    """A vertebra label as written: a whole number (``20`` or ``20.0``), never coerced.

    ``10.7`` is not truncated to 10, ``true`` is not 1, ``1e400`` (infinity) is not an error
    nobody expected: each is refused with the entry named.
    """
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )
    if not whole:
        raise InputError(
            path,
            f"entry {n} has label {json.dumps(value)[:40]} (expected a whole number, a vertebra "
            "label of the VerSe label map)",
            "fix the label; it is not rounded or guessed",
            check="centroid_label",
        )
    assert isinstance(value, (int, float))  # checked above (whole), for the type checker
    return int(value)
