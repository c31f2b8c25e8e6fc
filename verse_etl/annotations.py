"""MosMed vertebral-fracture keypoint annotation files -> one record per expert and vertebra.

Format v1 (Pisov et al., MICCAI 2020; neuro-ml/vertebral-fractures-severity)::

    {"Folder": str, "SeriesInstanceUID": str,
     "Annotation": {"expert3": [[[row, col, k] x 6], ...], ...}}

Each vertebra is six points in the order ``ant_sup, ant_inf, mid_sup, mid_inf, post_sup,
post_inf``; ``row`` and ``col`` are pixel indices of the DICOM pixel array, ``k`` is the 0-based
slice index in InstanceNumber order (see ``shared/specs/MOSMED.md`` §1.3).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from verse_etl.errors import InputError

POINT_NAMES: tuple[str, ...] = ("ant_sup", "ant_inf", "mid_sup", "mid_inf", "post_sup", "post_inf")
"""Keypoint order within one vertebra, as in both annotation releases."""


@dataclass(frozen=True)
class VertebraAnnotation:
    """One expert's six keypoints of one vertebra, as ``(row, col, k)`` voxel coordinates."""

    expert: str
    index: int  # position in the expert's list, cranial -> caudal
    points: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class AnnotationFile:
    """A parsed annotation file."""

    path: Path
    folder: str
    series_uid: str
    release: str
    vertebrae: tuple[VertebraAnnotation, ...]

    @property
    def experts(self) -> tuple[str, ...]:
        """Expert names in file order."""
        return tuple(dict.fromkeys(v.expert for v in self.vertebrae))


def read_annotation(path: Path) -> AnnotationFile:
    """Parse and structurally check one v1 annotation file.

    Raises
    ------
    InputError
        If the file is not JSON, lacks a key, or a vertebra is not six finite 3-D points.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(
            path, f"not valid JSON ({e})", "re-download the file", check="annotation_json"
        ) from e
    if not isinstance(data, dict):
        raise InputError(
            path, f"expected a JSON object, got {type(data).__name__}", check="annotation_json"
        )
    missing = [k for k in ("Folder", "SeriesInstanceUID", "Annotation") if k not in data]
    if missing:
        raise InputError(
            path,
            f"missing key(s) {missing} (expected Folder, SeriesInstanceUID, Annotation)",
            "the file is not a MosMed fracture annotation",
            check="annotation_keys",
        )
    experts = data["Annotation"]
    if not isinstance(experts, dict) or not experts:
        raise InputError(
            path, "Annotation must be a non-empty object of experts", check="annotation_keys"
        )
    vertebrae: list[VertebraAnnotation] = []
    for expert, items in experts.items():
        if not isinstance(items, list):
            raise InputError(
                path,
                f"{expert}: expected a list of vertebrae, got {type(items).__name__}",
                check="annotation_points",
            )
        for index, item in enumerate(items):
            vertebrae.append(
                VertebraAnnotation(
                    expert=str(expert), index=index, points=_points(path, expert, index, item)
                )
            )
    return AnnotationFile(
        path=path,
        folder=str(data["Folder"]),
        series_uid=str(data["SeriesInstanceUID"]),
        release="v1",
        vertebrae=tuple(vertebrae),
    )


def _points(
    path: Path, expert: str, index: int, item: object
) -> tuple[tuple[float, float, float], ...]:
    ok = (
        isinstance(item, list)
        and len(item) == 6
        and all(
            isinstance(p, list) and len(p) == 3 and all(isinstance(c, (int, float)) for c in p)
            for p in item
        )
    )
    if not ok:
        raise InputError(
            path,
            f"{expert} vertebra {index}: expected 6 points of 3 numbers, got {json.dumps(item)[:80]}",
            "fix or drop this vertebra",
            check="annotation_points",
        )
    points = tuple((float(p[0]), float(p[1]), float(p[2])) for p in item)  # type: ignore[union-attr]
    if not all(math.isfinite(c) for p in points for c in p):
        raise InputError(
            path, f"{expert} vertebra {index}: non-finite coordinate", check="annotation_points"
        )
    return points
