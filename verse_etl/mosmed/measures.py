"""Vertebral heights, deformity ratios and Genant grades from six keypoints in millimetres.

Spec: ``shared/specs/MOSMED.md`` §4 and Genant et al., *J Bone Miner Res* 1993 (semiquantitative
grading: 0 normal, 1 mild ~20-25 %, 2 moderate ~25-40 %, 3 severe > 40 % height reduction).

Per vertebra, with the points ``P0..P5 = ant_sup, ant_inf, mid_sup, mid_inf, post_sup,
post_inf`` in world millimetres:

* heights ``h_a = |P1 - P0|``, ``h_m = |P3 - P2|``, ``h_p = |P5 - P4|``;
* ``deformity = 1 - min(h) / max(h)`` (general deformity, the ratio graded by default);
* ``wedge = 1 - h_a / h_p``; ``biconcave = 1 - h_m / max(h_a, h_p)``;
* ``crush = 1 - h_p / mean(h_p of the adjacent vertebrae)`` (needs neighbours).

Ratios are height *reductions*: positive when the named height is the smaller one. The grade is
the bin of the largest selected ratio (negative ratios count as no reduction); thresholds and
which side of a bin is closed come from ``params.yaml: mosmed.genant``. No reference grades exist
for MosMed; these are derived measures, comparable between experts and releases only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from verse_etl.params import GenantParams


def heights_mm(points_mm: np.ndarray) -> tuple[float, float, float]:
    """Anterior, middle and posterior heights of one vertebra.

    Parameters
    ----------
    points_mm
        ``(6, 3)`` world coordinates in mm, in :data:`verse_etl.mosmed.annotations.POINT_NAMES` order.

    Examples
    --------
    >>> p = np.array([[0, 0, 20], [0, 0, 0], [10, 0, 18], [10, 0, 2], [20, 0, 21], [20, 0, 0]])
    >>> heights_mm(p)
    (20.0, 16.0, 21.0)
    """
    p = np.asarray(points_mm, dtype=float).reshape(6, 3)
    d = np.linalg.norm(p[1::2] - p[0::2], axis=1)
    return float(d[0]), float(d[1]), float(d[2])


def deformity_ratios(h_a: float, h_m: float, h_p: float) -> dict[str, float]:
    """Wedge, biconcave and general deformity ratios of one vertebra (NaN if a height is 0).

    Examples
    --------
    >>> {k: round(v, 3) for k, v in deformity_ratios(15.0, 18.0, 20.0).items()}
    {'wedge': 0.25, 'biconcave': 0.1, 'deformity': 0.25}
    """
    if min(h_a, h_m, h_p) <= 0:
        return {"wedge": math.nan, "biconcave": math.nan, "deformity": math.nan}
    return {
        "wedge": 1.0 - h_a / h_p,
        "biconcave": 1.0 - h_m / max(h_a, h_p),
        "deformity": 1.0 - min(h_a, h_m, h_p) / max(h_a, h_m, h_p),
    }


def crush_ratio(h_p: float, neighbour_h_p: Sequence[float]) -> float | None:
    """``1 - h_p / mean(neighbours' h_p)``, None without a neighbour.

    Examples
    --------
    >>> crush_ratio(15.0, [20.0, 20.0]), crush_ratio(15.0, [])
    (0.25, None)
    """
    values = [h for h in neighbour_h_p if h > 0 and math.isfinite(h)]
    if not values or h_p <= 0:
        return None
    return 1.0 - h_p / float(np.mean(values))


def genant_grade(ratio: float, params: GenantParams) -> int:
    """Genant grade (0..3) of a height-reduction ratio.

    Examples
    --------
    >>> left = GenantParams(closed="left")
    >>> [genant_grade(r, left) for r in (0.1, 0.2, 0.249, 0.25, 0.4, -0.3)]
    [0, 1, 1, 2, 3, 0]
    >>> genant_grade(0.2, GenantParams(closed="right"))
    0
    """
    t = params.thresholds
    if params.closed == "left":
        return sum(ratio >= edge for edge in t)
    return sum(ratio > edge for edge in t)


def grade_ratio(ratios: Mapping[str, float | None], params: GenantParams) -> float | None:
    """The ratio a grade is taken from: the largest of ``params.ratios`` that is known.

    Examples
    --------
    >>> grade_ratio({"deformity": 0.1, "crush": 0.3}, GenantParams(ratios=("deformity", "crush")))
    0.3
    >>> grade_ratio({"deformity": float("nan")}, GenantParams()) is None
    True
    """
    known = [
        float(ratios[name])  # type: ignore[arg-type]  # None filtered out below
        for name in params.ratios
        if ratios.get(name) is not None and math.isfinite(float(ratios[name]))  # type: ignore[arg-type]  # not None: checked first
    ]
    return max(known) if known else None
