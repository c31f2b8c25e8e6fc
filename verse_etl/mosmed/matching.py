"""Which annotated vertebrae are the same vertebra: across experts, and across releases.

Pure functions on vertebra centres and heights in world millimetres. Two vertebrae are the same
when their centres (mean of the six keypoints) are closer than half a vertebra height: adjacent
vertebrae are a whole height (plus a disc) apart, the same vertebra read twice is a few
millimetres apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from verse_etl.levels import LEVEL_RULES as LEVEL_RULES  # re-exported: the rules applied here

SAME_VERTEBRA_FRACTION = 0.5
"""Centres closer than this fraction of the vertebra's mean height are the same vertebra."""

IDENTICAL_VOXELS = 1e-9
"""Keypoints closer than this (voxels, per coordinate) are the same number written twice."""


def identical_points(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ``(6, 3)`` keypoint sets are the same numbers (within :data:`IDENTICAL_VOXELS`).

    Examples
    --------
    >>> p = np.arange(18.0).reshape(6, 3)
    >>> identical_points(p, p.copy()), identical_points(p, p + 0.01)
    (True, False)
    """
    return bool(np.all(np.abs(np.asarray(a, float) - np.asarray(b, float)) <= IDENTICAL_VOXELS))


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
    *,
    same_reader: Mapping[str, str] | None = None,
    points: np.ndarray | None = None,
    ref_points: np.ndarray | None = None,
) -> list[tuple[str | None, str | None]]:
    """Give each vertebra the level of the matching labelled (v2) vertebra, and the rule used.

    The rules of :data:`LEVEL_RULES`, first that applies:

    1. ``v2_identical_keypoints``: a labelled vertebra has the very same six keypoints
       (``points`` / ``ref_points``, as annotated): the same reading, relabelled;
    2. ``v2_same_reader``: the nearest labelled vertebra of the v2 reader that is this vertebra's
       reader (``same_reader``: v1 expert -> v2 expert, from
       :func:`verse_etl.mosmed.expert_matching.pair_experts`), centres closer than
       :data:`SAME_VERTEBRA_FRACTION` of the height;
    3. ``v2_other_reader``: the nearest labelled vertebra of any other reader, same limit.

    Expert keys are never compared across releases: the readers were renumbered.

    Returns
    -------
    list of ``(level, rule)``; ``(None, None)`` when no rule applies.

    Examples
    --------
    >>> levels_from_reference(np.array([[0, 0, 100.0], [0, 0, 50.0]]), [20, 20], ["e0", "e0"],
    ...     np.array([[0, 0, 101.0], [0, 0, 76.0]]), ["T7", "T8"], ["e0", "e0"])
    [('T7', 'v2_other_reader'), (None, None)]
    >>> levels_from_reference(np.array([[0, 0, 100.0]]), [20], ["e0"],
    ...     np.array([[0, 0, 101.0]]), ["T7"], ["e5"], same_reader={"e0": "e5"})
    [('T7', 'v2_same_reader')]
    """
    c = np.asarray(centres, dtype=float).reshape(-1, 3)
    r = np.asarray(ref_centres, dtype=float).reshape(-1, 3)
    readers = dict(same_reader or {})
    out: list[tuple[str | None, str | None]] = []
    for i in range(len(c)):
        labelled = [j for j in range(len(r)) if ref_levels[j] is not None]
        if points is not None and ref_points is not None:
            twin = next((j for j in labelled if identical_points(points[i], ref_points[j])), None)
            if twin is not None:
                out.append((ref_levels[twin], "v2_identical_keypoints"))
                continue
        limit = SAME_VERTEBRA_FRACTION * float(heights[i])
        reader = readers.get(experts[i])
        found: tuple[str | None, str | None] = (None, None)
        for rule, candidates in (
            ("v2_same_reader", [j for j in labelled if ref_experts[j] == reader]),
            ("v2_other_reader", [j for j in labelled if ref_experts[j] != reader]),
        ):
            near = [(float(np.linalg.norm(c[i] - r[j])), j) for j in candidates]
            near = [(d, j) for d, j in near if d < limit]
            if near:
                found = (ref_levels[min(near)[1]], rule)
                break
        out.append(found)
    return out
