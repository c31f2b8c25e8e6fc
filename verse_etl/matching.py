"""Which annotated vertebrae are the same vertebra: across experts, and across releases.

Pure functions on vertebra centres and heights in world millimetres. Two vertebrae are the same
when their centres (mean of the six keypoints) are closer than half a vertebra height: adjacent
vertebrae are a whole height (plus a disc) apart, the same vertebra read twice is a few
millimetres apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SAME_VERTEBRA_FRACTION = 0.5
"""Centres closer than this fraction of the vertebra's mean height are the same vertebra."""


def group_vertebrae(
    centres: np.ndarray, heights: Sequence[float], experts: Sequence[str]
) -> list[list[int]]:
    """Group one study's vertebrae (all experts, one release) into anatomical vertebrae.

    Vertebrae are taken cranial first (largest RAS z); one joins the current group when its
    centre is within :data:`SAME_VERTEBRA_FRACTION` of the group's mean height from the group's
    mean centre and its expert is not in the group yet.

    Parameters
    ----------
    centres
        ``(n, 3)`` RAS+ centres in mm.
    heights
        Mean height of each vertebra in mm.
    experts
        Expert of each vertebra.

    Returns
    -------
    list of groups, cranial first, each a sorted list of row indices.

    Examples
    --------
    >>> c = np.array([[0, 0, 100.0], [0, 0, 101.0], [0, 0, 75.0], [0, 0, 74.0]])
    >>> group_vertebrae(c, [20, 20, 20, 20], ["e1", "e2", "e1", "e2"])
    [[0, 1], [2, 3]]
    """
    c = np.asarray(centres, dtype=float).reshape(-1, 3)
    order = sorted(range(len(c)), key=lambda i: (-c[i, 2], experts[i], i))
    groups: list[list[int]] = []
    for i in order:
        if groups:
            g = groups[-1]
            centre = c[g].mean(axis=0)
            height = float(np.mean([heights[j] for j in g]))
            if np.linalg.norm(c[i] - centre) < SAME_VERTEBRA_FRACTION * height and experts[
                i
            ] not in {experts[j] for j in g}:
                g.append(i)
                continue
        groups.append([i])
    return [sorted(g) for g in groups]


def levels_from_reference(
    centres: np.ndarray,
    heights: Sequence[float],
    experts: Sequence[str],
    ref_centres: np.ndarray,
    ref_levels: Sequence[str | None],
    ref_experts: Sequence[str],
) -> list[tuple[str | None, str | None]]:
    """Give each vertebra the level of the matching labelled (v2) vertebra.

    The same expert's vertebra is preferred; failing that, the nearest labelled vertebra of any
    expert. A match needs centres closer than :data:`SAME_VERTEBRA_FRACTION` of the vertebra's
    height.

    Returns
    -------
    list of ``(level, source)``
        ``source`` is ``"v2_same_expert"``, ``"v2_other_expert"``, or None when nothing matched
        (level None).

    Examples
    --------
    >>> levels_from_reference(np.array([[0, 0, 100.0], [0, 0, 50.0]]), [20, 20], ["e0", "e0"],
    ...     np.array([[0, 0, 101.0], [0, 0, 76.0]]), ["T7", "T8"], ["e1", "e1"])
    [('T7', 'v2_other_expert'), (None, None)]
    """
    c = np.asarray(centres, dtype=float).reshape(-1, 3)
    r = np.asarray(ref_centres, dtype=float).reshape(-1, 3)
    out: list[tuple[str | None, str | None]] = []
    for i in range(len(c)):
        limit = SAME_VERTEBRA_FRACTION * float(heights[i])
        best: tuple[float, str | None, str | None] = (np.inf, None, None)
        for same in (True, False):
            for j in range(len(r)):
                if ref_levels[j] is None or (ref_experts[j] == experts[i]) != same:
                    continue
                d = float(np.linalg.norm(c[i] - r[j]))
                if d < limit and d < best[0]:
                    best = (d, ref_levels[j], "v2_same_expert" if same else "v2_other_expert")
            if best[1] is not None:
                break
        out.append((best[1], best[2]))
    return out
