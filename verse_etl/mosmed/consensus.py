"""Agreement between experts: validated ``mosmed_vertebrae`` rows -> ``mosmed_consensus`` rows.

Within one study and release, the experts' readings of a vertebra are matched by level when every
reading has one, else by position (:func:`verse_etl.mosmed.matching.group_vertebrae`). Each group gives
its keypoint distances between experts (corresponding points, in mm), mean heights and ratio, and
how far the experts' Genant grades agree.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from verse_etl.mosmed.annotations import LEVELS, POINT_NAMES
from verse_etl.mosmed.matching import group_vertebrae
from verse_etl.schemas.mosmed_consensus import MOSMED_CONSENSUS

_WORLD = [f"{p}_{axis}_mm" for p in POINT_NAMES for axis in ("x", "y", "z")]


def consensus_grade(grades: list[int]) -> tuple[int, float]:
    """The most frequent grade (ties: the higher, the cautious reading) and its share.

    Examples
    --------
    >>> consensus_grade([0, 0, 1]), consensus_grade([0, 2])
    ((0, 0.6666666666666666), (2, 0.5))
    """
    counts = Counter(grades)
    grade = max(counts, key=lambda g: (counts[g], g))
    return grade, counts[grade] / len(grades)


def consensus_rows(vertebrae: pd.DataFrame) -> list[dict[str, Any]]:
    """One consensus row per study, release and vertebra.

    Parameters
    ----------
    vertebrae
        Validated rows of the ``mosmed_vertebrae`` table.
    """
    rows: list[dict[str, Any]] = []
    if vertebrae.empty:
        return rows
    for (folder, release), frame in vertebrae.groupby(["folder", "release"], sort=True):
        study = _Study(frame)
        if study.by_level:
            order = sorted(set(study.levels), key=LEVELS.index)
            groups = [[i for i, v in enumerate(study.levels) if v == level] for level in order]
        else:
            groups = group_vertebrae(
                study.points.mean(axis=1), study.heights.mean(axis=1).tolist(), study.experts
            )
        for number, members in enumerate(groups):
            rows.append(_group_row(study, members, str(folder), str(release), number))
    return rows


class _Study:
    """The columns of one study and release that its groups read, taken out of the frame once:
    a group's row is then made from plain lists and arrays (slicing the frame for each group and
    reducing its columns one by one took ~1 ms a row, paid for every row whenever the tables
    are made)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        # Validated columns: no nulls but in ``level`` (the heights and ratios are > 0).
        self.points = frame[_WORLD].to_numpy(dtype=float).reshape(-1, 6, 3)
        self.heights = frame[_HEIGHTS].to_numpy(dtype=float)
        self.ratios = frame["deformity_ratio"].to_numpy(dtype=float)
        self.experts = frame["expert"].astype(str).tolist()
        self.levels = frame["level"].tolist()
        self.grades = [int(g) for g in frame["genant_grade"]]
        self.series_uids = frame["series_uid"].tolist()
        self.by_level = all(isinstance(v, str) for v in self.levels)


_HEIGHTS = ["height_ant_mm", "height_mid_mm", "height_post_mm"]


def _group_row(
    study: _Study, members: list[int], folder: str, release: str, number: int
) -> dict[str, Any]:
    points = study.points
    distances = [np.linalg.norm(points[a] - points[b], axis=1) for a, b in combinations(members, 2)]
    levels = {study.levels[i] for i in members if isinstance(study.levels[i], str)}
    grades = [study.grades[i] for i in members]
    grade, agreement = consensus_grade(grades)
    heights = study.heights[members].mean(axis=0)
    return MOSMED_CONSENSUS.row(
        {
            "folder": folder,
            "series_uid": str(study.series_uids[members[0]]),
            "release": release,
            "vertebra": number,
            "level": levels.pop() if len(levels) == 1 else None,
            "grouped_by": "level" if study.by_level else "position",
            "n_experts": len(members),
            "experts": ",".join(sorted(study.experts[i] for i in members)),
            "mean_keypoint_distance_mm": float(np.mean([d.mean() for d in distances]))
            if distances
            else None,
            "max_keypoint_distance_mm": float(max(d.max() for d in distances))
            if distances
            else None,
            "height_ant_mm": float(heights[0]),
            "height_mid_mm": float(heights[1]),
            "height_post_mm": float(heights[2]),
            "deformity_ratio": float(study.ratios[members].mean()),
            "genant_grade": grade,
            "genant_grade_min": min(grades),
            "genant_grade_max": max(grades),
            "grade_agreement": agreement,
        }
    )
