"""Which v2 reader is which v1 reader: the expert correspondence between MosMed's two annotation
releases, derived from the keypoints (never from the expert keys).

The readers were renumbered between the releases (MOSMED.md §1): in the real files the vertebrae
that v1's ``expert2`` placed reappear with the very same floating-point keypoints under v2's
``expert3``, and v1's ``expert3`` under v2's ``expert2``. Identical keypoints cannot arise by
chance (they are 18 fractional numbers), so a v2 reader that repeats any of a v1 reader's
vertebrae exactly is taken to be that reader, re-reading the study; readers that share no
vertebra exactly are not paired, whatever their keys.

Pure functions on keypoint arrays: ``(n, 6, 3)`` ``[row, col, k]`` voxel points per expert (the
identity test) and the same points in world millimetres (distances between near matches).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from verse_etl.mosmed.matching import SAME_VERTEBRA_FRACTION, identical_points


@dataclass(frozen=True)
class ExpertPair:
    """How far one v1 reader's vertebrae agree with one v2 reader's (one study).

    Attributes
    ----------
    expert_v1, expert_v2
        Expert keys as written in each release.
    n_vertebrae_v1, n_vertebrae_v2
        Vertebrae each read.
    n_identical
        v1 vertebrae whose six keypoints the v2 reader repeats exactly.
    n_matched
        v1 vertebrae with a v2 vertebra of this reader whose centre is within half a vertebra
        height (the same vertebra, maybe re-read).
    mean_keypoint_distance_mm
        Mean distance between corresponding keypoints of the matched vertebrae (world mm);
        None without a match.
    same_reader
        The pair is one reader in both releases (see :func:`pair_experts`).
    """

    expert_v1: str
    expert_v2: str
    n_vertebrae_v1: int
    n_vertebrae_v2: int
    n_identical: int
    n_matched: int
    mean_keypoint_distance_mm: float | None
    same_reader: bool


def _heights(world: np.ndarray) -> np.ndarray:
    # Mean of the anterior, middle and posterior heights of each vertebra.
    return np.linalg.norm(world[:, 1::2] - world[:, 0::2], axis=2).mean(axis=1)


def compare_experts(
    v1_voxels: np.ndarray, v2_voxels: np.ndarray, v1_world: np.ndarray, v2_world: np.ndarray
) -> tuple[int, int, float | None]:
    """Identical and matched vertebrae of one v1 reader against one v2 reader.

    Parameters
    ----------
    v1_voxels, v2_voxels
        ``(n, 6, 3)`` keypoints ``[row, col, k]`` as annotated.
    v1_world, v2_world
        The same keypoints in world mm (same shapes).

    Returns
    -------
    n_identical, n_matched, mean_keypoint_distance_mm
        As in :class:`ExpertPair`.
    """
    a_vox, b_vox = np.asarray(v1_voxels, float), np.asarray(v2_voxels, float)
    a, b = np.asarray(v1_world, float), np.asarray(v2_world, float)
    if len(a) == 0 or len(b) == 0:
        return 0, 0, None
    identical = sum(any(identical_points(x, y) for y in b_vox) for x in a_vox)
    centres_a, centres_b = a.mean(axis=1), b.mean(axis=1)
    limits = SAME_VERTEBRA_FRACTION * _heights(a)
    distances: list[float] = []
    for i in range(len(a)):
        d = np.linalg.norm(centres_b - centres_a[i], axis=1)
        j = int(np.argmin(d))
        if d[j] < limits[i]:
            distances.append(float(np.linalg.norm(a[i] - b[j], axis=1).mean()))
    mean = float(np.mean(distances)) if distances else None
    return int(identical), len(distances), mean


def pair_experts(
    v1_voxels: Mapping[str, np.ndarray],
    v2_voxels: Mapping[str, np.ndarray],
    v1_world: Mapping[str, np.ndarray],
    v2_world: Mapping[str, np.ndarray],
) -> list[ExpertPair]:
    """Compare every v1 reader of a study with every v2 reader and pair the same readers.

    Pairs are taken greedily, most identical vertebrae first (ties: more matched vertebrae, then
    the smaller mean distance, then the keys), each reader at most once and only with at least
    one identical vertebra. A v1 reader no v2 reader repeats is paired with nobody.

    Parameters
    ----------
    v1_voxels, v2_voxels
        Expert key -> ``(n, 6, 3)`` keypoints ``[row, col, k]`` as annotated.
    v1_world, v2_world
        Expert key -> the same keypoints in world mm.

    Returns
    -------
    list of ExpertPair
        Every (v1, v2) combination, sorted by keys.

    Examples
    --------
    >>> p = np.arange(36.0).reshape(2, 6, 3)
    >>> pairs = pair_experts({"expert2": p}, {"expert2": p + 9, "expert3": p},
    ...                      {"expert2": p}, {"expert2": p + 9, "expert3": p})
    >>> [(x.expert_v1, x.expert_v2, x.n_identical, x.same_reader) for x in pairs]
    [('expert2', 'expert2', 0, False), ('expert2', 'expert3', 2, True)]
    """
    found = []
    for e1 in sorted(v1_voxels):
        for e2 in sorted(v2_voxels):
            found.append(
                (e1, e2, *compare_experts(v1_voxels[e1], v2_voxels[e2], v1_world[e1], v2_world[e2]))
            )
    order = sorted(
        found,
        key=lambda f: (-f[2], -f[3], np.inf if f[4] is None else f[4], f[0], f[1]),
    )
    used_v1: set[str] = set()
    used_v2: set[str] = set()
    same: set[tuple[str, str]] = set()
    for e1, e2, identical, _matched, _mean in order:
        if identical > 0 and e1 not in used_v1 and e2 not in used_v2:
            same.add((e1, e2))
            used_v1.add(e1)
            used_v2.add(e2)
    return [
        ExpertPair(
            expert_v1=e1,
            expert_v2=e2,
            n_vertebrae_v1=len(v1_voxels[e1]),
            n_vertebrae_v2=len(v2_voxels[e2]),
            n_identical=identical,
            n_matched=matched,
            mean_keypoint_distance_mm=mean,
            same_reader=(e1, e2) in same,
        )
        for e1, e2, identical, matched, mean in found
    ]
