"""Rows of the ``mosmed_vertebrae`` and ``mosmed_expert_pairs`` tables
(``schemas/mosmed_vertebrae.py``, ``schemas/mosmed_expert_pairs.py``): one expert's six keypoints
of one vertebra in the store's index space and in world RAS+ mm, with heights, deformity ratios
and Genant grade; and the v1 <-> v2 reader correspondence of a study."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np

from verse_etl.geometry.affines import apply_affine
from verse_etl.geometry.series import SeriesGeometry, store_slice_index
from verse_etl.geometry.store_frame import store_frame
from verse_etl.geometry.tilt import TiltGrid
from verse_etl.mosmed.annotations import LEVELS, POINT_NAMES, AnnotationFile
from verse_etl.mosmed.expert_matching import pair_experts
from verse_etl.mosmed.matching import levels_from_reference
from verse_etl.mosmed.measures import (
    crush_ratio,
    deformity_ratios,
    genant_grade,
    grade_ratio,
    heights_mm,
)
from verse_etl.params import MosmedParams
from verse_etl.schemas.mosmed_expert_pairs import MOSMED_EXPERT_PAIRS
from verse_etl.schemas.mosmed_vertebrae import MOSMED_VERTEBRAE

_UNGRADED = -1  # only with a zero height, which fails the height checks too


def expert_pairs(v1: list[dict[str, Any]], v2: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of ``mosmed_expert_pairs``: every v1 reader against every v2 reader of the study."""
    by_release = []
    for rows in (v1, v2):
        experts: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            experts.setdefault(row["expert"], []).append(row)
        by_release.append(experts)
    voxels = [
        {e: np.array([keypoint_voxels(r) for r in rs]) for e, rs in x.items()} for x in by_release
    ]
    world = [{e: np.array([_world(r) for r in rs]) for e, rs in x.items()} for x in by_release]
    return [
        MOSMED_EXPERT_PAIRS.row(
            asdict(pair),
            folder=v1[0]["folder"],
            series_uid=v1[0]["series_uid"],
            annotation_path_v1=v1[0]["annotation_path"],
            annotation_path_v2=v2[0]["annotation_path"],
        )
        for pair in pair_experts(voxels[0], voxels[1], world[0], world[1])
    ]


def keypoint_voxels(row: dict[str, Any]) -> np.ndarray:
    return np.array([[row[f"{p}_{a}"] for a in ("row", "col", "k")] for p in POINT_NAMES])


def _world(row: dict[str, Any]) -> np.ndarray:
    return np.array([[row[f"{p}_{a}_mm"] for a in ("x", "y", "z")] for p in POINT_NAMES])


def centre(row: dict[str, Any]) -> np.ndarray:
    return _world(row).mean(axis=0)


def mean_height(row: dict[str, Any]) -> float:
    return float(np.mean([row["height_ant_mm"], row["height_mid_mm"], row["height_post_mm"]]))


def vertebra_row(
    ann: AnnotationFile,
    vertebra: Any,
    uid: str,
    id_match: str,
    rel: str,
    geometry: SeriesGeometry,
    series_row: dict[str, Any],
    grid: TiltGrid | None = None,
) -> dict[str, Any]:
    points = np.asarray(vertebra.points, dtype=float)  # (6, 3): row, col, k
    shape = geometry.shape
    if grid is None:
        slices = store_slice_index(points[:, 2], geometry)
        index = np.column_stack([points[:, :2], slices])
        world = apply_affine(geometry.affine, index)  # type: ignore[arg-type]  # a clean volume: affine set
        frame = store_frame(geometry.affine, shape)  # type: ignore[arg-type]  # a clean volume: affine set
    else:
        # A resampled series: the reader's pixel (row, col) of acquired slice k lies where that
        # slice was acquired (IPP interpolated between slices), not on the resampled grid.
        order = store_slice_index(np.arange(shape[2]), geometry).astype(int)
        world = grid.acquired_world(points, order)
        index = grid.store_index(world)
        slices = index[:, 2]
        shape = grid.shape
        frame = store_frame(grid.affine, shape)
    stored = frame.to_store_index(index)  # the store holds the grid turned the right way up
    h_a, h_m, h_p = heights_mm(world)
    row: dict[str, Any] = {
        "folder": series_row["folder"],
        "series_uid": uid,
        "release": ann.release,
        "expert": vertebra.expert,
        "vertebra_index": vertebra.index,
        "level": vertebra.level,
        "level_source": "annotation" if vertebra.level else None,
        "id_match": id_match,
        "annotation_path": rel,
        "store_path": series_row["store_path"],
        "series_rows": shape[0],
        "series_columns": shape[1],
        "series_slices": shape[2],
    }
    for i, name in enumerate(POINT_NAMES):
        row[f"{name}_row"], row[f"{name}_col"], row[f"{name}_k"] = (float(v) for v in points[i])
        row[f"{name}_slice"] = float(slices[i])
        row[f"{name}_store_z"], row[f"{name}_store_y"], row[f"{name}_store_x"] = (
            float(v) for v in stored[i]
        )
        row[f"{name}_x_mm"], row[f"{name}_y_mm"], row[f"{name}_z_mm"] = (float(v) for v in world[i])
    ratios = deformity_ratios(h_a, h_m, h_p)
    row.update(
        height_ant_mm=h_a,
        height_mid_mm=h_m,
        height_post_mm=h_p,
        wedge_ratio=ratios["wedge"],
        biconcave_ratio=ratios["biconcave"],
        deformity_ratio=ratios["deformity"],
        crush_ratio=None,
        genant_grade=_UNGRADED,
    )
    return MOSMED_VERTEBRAE.row(row)


def grade(rows: list[dict[str, Any]], params: MosmedParams) -> None:
    """Crush ratios (neighbours of the same expert) and Genant grades, in place."""
    by_expert: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_expert.setdefault(row["expert"], []).append(row)
    for row in rows:
        own = by_expert[row["expert"]]
        if row["level"] is not None:
            at = LEVELS.index(row["level"])
            neighbours = [
                r for r in own if r["level"] is not None and abs(LEVELS.index(r["level"]) - at) == 1
            ]
        else:
            neighbours = [r for r in own if abs(r["vertebra_index"] - row["vertebra_index"]) == 1]
        row["crush_ratio"] = crush_ratio(
            row["height_post_mm"], [r["height_post_mm"] for r in neighbours]
        )
        ratio = grade_ratio(
            {
                "deformity": row["deformity_ratio"],
                "wedge": row["wedge_ratio"],
                "biconcave": row["biconcave_ratio"],
                "crush": row["crush_ratio"],
            },
            params.genant,
        )
        row["genant_grade"] = _UNGRADED if ratio is None else genant_grade(ratio, params.genant)


def transfer_levels(
    v1: list[dict[str, Any]], v2: list[dict[str, Any]], same_reader: dict[str, str]
) -> None:
    """Give the v1 keypoint rows (which carry no level) the level of the matching v2 vertebra
    (:func:`verse_etl.mosmed.matching.levels_from_reference`), in place; ``same_reader`` maps
    a v1 expert to the v2 expert who is the same reader."""
    # A level given twice by one v2 expert is an error of that file (quarantined by the table
    # check); it must not spread to the v1 vertebrae, so such readings are not used as labels.
    counts = Counter((r["expert"], r["level"]) for r in v2)
    labelled = [
        r
        for r in v2
        if r["level"] is not None
        and counts[(r["expert"], r["level"])] == 1
        and r["series_uid"] == (v1[0]["series_uid"] if v1 else None)
    ]
    if v1 and labelled:
        found = levels_from_reference(
            np.array([centre(r) for r in v1]),
            [mean_height(r) for r in v1],
            [r["expert"] for r in v1],
            np.array([centre(r) for r in labelled]),
            [r["level"] for r in labelled],
            [r["expert"] for r in labelled],
            same_reader=same_reader,
            points=np.array([keypoint_voxels(r) for r in v1]),
            ref_points=np.array([keypoint_voxels(r) for r in labelled]),
        )
        for row, (level, source) in zip(v1, found, strict=True):
            row["level"], row["level_source"] = level, source
