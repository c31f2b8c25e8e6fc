"""MosMed vertebral-fracture keypoint annotation files (both releases) -> vertebra records.

Spec: ``shared/specs/MOSMED.md`` §1. Both releases share file names, ``Folder`` and
``SeriesInstanceUID``; they differ in the vertebra object:

* **v1** (Pisov et al., MICCAI 2020; neuro-ml/vertebral-fractures-severity)::

      {"Folder": str, "SeriesInstanceUID": str,
       "Annotation": {"expert3": [[[row, col, k] x 6], ...], ...}}

* **v2** (Zakharov, Pisov et al., MedIA 2023; neuro-ml/anchor-free-genant)::

      "Annotation": {"expert1": [{"segments": [[ant_sup, ant_inf], [mid_sup, mid_inf],
                                               [post_sup, post_inf]], "type": "Th7"}, ...]}

  ``segments`` reshaped to 6 points gives the v1 point order; ``type`` is one of C1..C7,
  Th1..Th12, L1..L5 (thoracic written ``Th``).

Points are ``[row, col, k]``: pixel row and column of the DICOM pixel array, and ``k`` the
0-based (fractional) slice position in InstanceNumber order. The release of a file is read from
its content. A malformed vertebra is reported and left out; the rest of the file is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from verse_etl.errors import InputError
from verse_etl.io.json_files import read_json
from verse_etl.levels import MOSMED_ANNOTATED_LEVELS as ANNOTATED_LEVELS
from verse_etl.levels import MOSMED_LEVELS as LEVELS
from verse_etl.levels import POINT_NAMES as POINT_NAMES  # re-exported: the readers' vocabulary
from verse_etl.params import InputLimits

RELEASES: tuple[str, ...] = ("v1", "v2")


def normalise_level(label: object) -> str | None:
    """The table's level name of a v2 ``type`` label, or None if it is not one.

    Examples
    --------
    >>> normalise_level("Th7"), normalise_level("L1"), normalise_level("T7"), normalise_level("S1")
    ('T7', 'L1', None, None)
    """
    if not isinstance(label, str) or label not in ANNOTATED_LEVELS:
        return None
    return LEVELS[ANNOTATED_LEVELS.index(label)]


@dataclass(frozen=True)
class VertebraAnnotation:
    """One expert's six keypoints of one vertebra, as ``(row, col, k)`` voxel coordinates."""

    expert: str
    index: int  # position in the expert's list, cranial -> caudal
    points: tuple[tuple[float, float, float], ...]
    label: str | None = None  # v2 ``type`` as written (e.g. "Th7")
    level: str | None = None  # the label as a table level name (e.g. "T7"), None if unknown


@dataclass(frozen=True)
class AnnotationFile:
    """A parsed annotation file: its identifiers, release, good vertebrae and bad ones."""

    path: Path
    folder: str
    series_uid: str
    release: str
    vertebrae: tuple[VertebraAnnotation, ...]
    problems: tuple[InputError, ...] = ()

    @property
    def experts(self) -> tuple[str, ...]:
        """Expert names in file order."""
        return tuple(dict.fromkeys(v.expert for v in self.vertebrae))


def read_annotation(path: Path, limits: InputLimits | None = None) -> AnnotationFile:
    """Parse one annotation file of either release.

    Returns
    -------
    AnnotationFile
        ``release`` is ``"v1"`` when vertebrae are bare point lists, ``"v2"`` when they are
        objects with ``segments``. Vertebrae that are not six finite 3-D points, or whose v2
        ``type`` is not a known level, are listed in ``problems`` (the former left out, the
        latter kept without a level).

    Raises
    ------
    InputError
        If the file is not JSON (or larger or deeper than ``limits`` allow, or not a regular
        file), lacks a key, or mixes v1 and v2 vertebrae.
    """
    data = read_json(path, limits or InputLimits(), "annotation_json", encoding="utf-8-sig")
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
    if not isinstance(data["Folder"], str) or not isinstance(data["SeriesInstanceUID"], str):
        raise InputError(
            path,
            "Folder and SeriesInstanceUID must be strings "
            f"(got {type(data['Folder']).__name__}, {type(data['SeriesInstanceUID']).__name__})",
            check="annotation_keys",
        )
    experts = data["Annotation"]
    if not isinstance(experts, dict) or not experts:
        raise InputError(
            path, "Annotation must be a non-empty object of experts", check="annotation_keys"
        )
    kinds = {
        "v2" if isinstance(item, dict) else "v1"
        for items in experts.values()
        if isinstance(items, list)
        for item in items
    }
    if len(kinds) > 1:
        raise InputError(
            path,
            "mixes v1 vertebrae (point lists) and v2 vertebrae (objects with 'segments')",
            "a file must be of one release",
            check="annotation_release",
        )
    release = kinds.pop() if kinds else "v1"
    vertebrae: list[VertebraAnnotation] = []
    problems: list[InputError] = []
    for expert, items in experts.items():
        if not isinstance(items, list):
            problems.append(
                InputError(
                    path,
                    f"{expert}: expected a list of vertebrae, got {type(items).__name__}",
                    "the expert's vertebrae were left out",
                    check="annotation_points",
                )
            )
            continue
        for index, item in enumerate(items):
            try:
                vertebrae.append(_vertebra(path, str(expert), index, item, release))
            except InputError as e:
                problems.append(e)
                continue
            if release == "v2" and vertebrae[-1].level is None:
                problems.append(
                    InputError(
                        path,
                        f"{expert} vertebra {index}: type {item.get('type')!r} is not a level "
                        f"(expected one of {ANNOTATED_LEVELS[0]}..{ANNOTATED_LEVELS[-1]})",
                        "the vertebra is kept without a level",
                        check="annotation_level",
                    )
                )
    return AnnotationFile(
        path=path,
        folder=data["Folder"],
        series_uid=data["SeriesInstanceUID"],
        release=release,
        vertebrae=tuple(vertebrae),
        problems=tuple(problems),
    )


def _vertebra(
    path: Path, expert: str, index: int, item: object, release: str
) -> VertebraAnnotation:
    label = None
    points_raw: object = item
    if release == "v2":
        if not isinstance(item, dict) or "segments" not in item:
            raise InputError(
                path,
                f"{expert} vertebra {index}: expected an object with 'segments' and 'type', "
                f"got {json.dumps(item)[:80]}",
                "the vertebra was left out",
                check="annotation_points",
            )
        label = item.get("type")
        segments = item["segments"]
        ok = (
            isinstance(segments, list)
            and len(segments) == 3
            and all(isinstance(s, list) and len(s) == 2 for s in segments)
        )
        points_raw = [p for s in segments for p in s] if ok else segments
    points = _points(path, expert, index, points_raw)
    return VertebraAnnotation(
        expert=expert,
        index=index,
        points=points,
        label=label if isinstance(label, str) else None,
        level=normalise_level(label),
    )


def _points(
    path: Path, expert: str, index: int, item: object
) -> tuple[tuple[float, float, float], ...]:
    ok = (
        isinstance(item, list)
        and len(item) == 6
        and all(
            isinstance(p, list)
            and len(p) == 3
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p)
            for p in item
        )
    )
    if not ok:
        count = f"{len(item)} item(s): " if isinstance(item, list) else ""
        raise InputError(
            path,
            f"{expert} vertebra {index}: expected 6 points of 3 numbers, got "
            f"{count}{json.dumps(item)[:80]}",
            "the vertebra was left out",
            check="annotation_points",
        )
    assert isinstance(item, list)  # checked above (ok), for the type checker
    points = tuple((float(p[0]), float(p[1]), float(p[2])) for p in item)
    if not all(math.isfinite(c) for p in points for c in p):
        raise InputError(
            path,
            f"{expert} vertebra {index}: non-finite coordinate",
            "the vertebra was left out",
            check="annotation_points",
        )
    return points
