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
    for (folder, release), study in vertebrae.groupby(["folder", "release"], sort=True):
        study = study.reset_index(drop=True)
        points = study[_WORLD].to_numpy(dtype=float).reshape(-1, 6, 3)
        experts = study["expert"].astype(str).tolist()
        levels = study["level"].tolist()
        by_level = all(isinstance(v, str) for v in levels)
        if by_level:
            order = sorted(set(levels), key=LEVELS.index)
            groups = [[i for i, v in enumerate(levels) if v == level] for level in order]
        else:
            heights = study[["height_ant_mm", "height_mid_mm", "height_post_mm"]].mean(axis=1)
            groups = group_vertebrae(points.mean(axis=1), heights.tolist(), experts)
        for number, members in enumerate(groups):
            rows.append(
                _group_row(study, points, members, str(folder), str(release), number, by_level)
            )
    return rows


def _group_row(
    study: pd.DataFrame,
    points: np.ndarray,
    members: list[int],
    folder: str,
    release: str,
    number: int,
    by_level: bool,
) -> dict[str, Any]:
    part = study.iloc[members]
    distances = [np.linalg.norm(points[a] - points[b], axis=1) for a, b in combinations(members, 2)]
    levels = {v for v in part["level"] if isinstance(v, str)}
    grades = [int(g) for g in part["genant_grade"]]
    grade, agreement = consensus_grade(grades)
    return MOSMED_CONSENSUS.row(
        {
            "folder": folder,
            "series_uid": str(part["series_uid"].iloc[0]),
            "release": release,
            "vertebra": number,
            "level": levels.pop() if len(levels) == 1 else None,
            "grouped_by": "level" if by_level else "position",
            "n_experts": len(members),
            "experts": ",".join(sorted(part["expert"].astype(str))),
            "mean_keypoint_distance_mm": float(np.mean([d.mean() for d in distances]))
            if distances
            else None,
            "max_keypoint_distance_mm": float(max(d.max() for d in distances))
            if distances
            else None,
            "height_ant_mm": float(part["height_ant_mm"].mean()),
            "height_mid_mm": float(part["height_mid_mm"].mean()),
            "height_post_mm": float(part["height_post_mm"].mean()),
            "deformity_ratio": float(part["deformity_ratio"].mean()),
            "genant_grade": grade,
            "genant_grade_min": min(grades),
            "genant_grade_max": max(grades),
            "grade_agreement": agreement,
        }
    )
