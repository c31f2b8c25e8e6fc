"""Heights, ratios and grades follow the formulas; matching finds the same vertebra; consensus
rows compare experts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from verse_etl.schemas import MosmedConsensusTable

from verse_etl.errors import ParamsError
from verse_etl.mosmed.annotations import POINT_NAMES
from verse_etl.mosmed.consensus import consensus_rows
from verse_etl.mosmed.matching import group_vertebrae, levels_from_reference
from verse_etl.mosmed.measures import (
    crush_ratio,
    deformity_ratios,
    genant_grade,
    grade_ratio,
    heights_mm,
)
from verse_etl.params import GenantParams


def _vertebra(h_a: float, h_m: float, h_p: float, z: float = 0.0, dx: float = 0.0) -> np.ndarray:
    """Six RAS points of a vertebra: anterior at y = 15, middle 0, posterior -15; tilted a bit."""
    rows = []
    for y, h in ((15.0, h_a), (0.0, h_m), (-15.0, h_p)):
        rows += [[dx + 0.3 * y, y, z + h / 2], [dx - 0.3 * y, y, z - h / 2]]
    return np.asarray(rows)


def test_heights_are_point_distances() -> None:
    p = _vertebra(18.0, 16.0, 20.0)
    h = heights_mm(p)
    expected = [np.linalg.norm(p[2 * i + 1] - p[2 * i]) for i in range(3)]
    np.testing.assert_allclose(h, expected)
    assert h[0] > 18.0  # the anterior pair is offset in x too: a distance, not a z difference


def test_ratios_follow_the_formulas() -> None:
    r = deformity_ratios(12.0, 18.0, 20.0)
    assert r["wedge"] == pytest.approx(1 - 12 / 20)
    assert r["biconcave"] == pytest.approx(1 - 18 / 20)
    assert r["deformity"] == pytest.approx(1 - 12 / 20)
    assert deformity_ratios(20.0, 12.0, 18.0)["biconcave"] == pytest.approx(0.4)
    assert np.isnan(deformity_ratios(0.0, 1.0, 1.0)["deformity"])
    assert crush_ratio(14.0, [20.0, 20.0]) == pytest.approx(0.3)
    assert crush_ratio(14.0, []) is None


@pytest.mark.parametrize(
    "closed, ratio, grade",
    [
        ("left", 0.199999, 0),
        ("left", 0.2, 1),
        ("left", 0.25, 2),
        ("left", 0.4, 3),
        ("right", 0.2, 0),
        ("right", 0.25, 1),
        ("right", 0.4, 2),
        ("right", 0.400001, 3),
    ],
)
def test_bin_edges_follow_the_convention(closed: str, ratio: float, grade: int) -> None:
    assert genant_grade(ratio, GenantParams(closed=closed)) == grade


def test_grade_uses_the_largest_selected_ratio() -> None:
    ratios = {"deformity": 0.1, "wedge": 0.05, "biconcave": 0.02, "crush": 0.3}
    assert grade_ratio(ratios, GenantParams()) == 0.1
    assert grade_ratio(ratios, GenantParams(ratios=("deformity", "crush"))) == 0.3
    assert grade_ratio({**ratios, "crush": None}, GenantParams(ratios=("crush",))) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"thresholds": (0.25, 0.2, 0.4)}, {"closed": "both"}, {"ratios": ("height",)}, {"ratios": ()}],
)
def test_bad_genant_params_are_refused(kwargs: dict) -> None:
    with pytest.raises(ParamsError, match=r"mosmed\.genant"):
        GenantParams(**kwargs)


def test_group_and_level_matching() -> None:
    # Two experts, three vertebrae 25 mm apart; expert b missed the lowest one.
    centres = np.array([[0, 0, 50.0], [0, 0, 25], [0, 0, 0], [1, 0, 51], [0, 1, 24]])
    experts = ["a", "a", "a", "b", "b"]
    groups = group_vertebrae(centres, [20.0] * 5, experts)
    assert groups == [[0, 3], [1, 4], [2]]
    found = levels_from_reference(
        centres,
        [20.0] * 5,
        experts,
        np.array([[0, 0, 49.0], [0, 0, 26.0], [0, 0, 24.0]]),
        ["T7", "T8", "T8"],
        ["x", "x", "c"],
        same_reader={"a": "x"},
    )
    assert found == [
        ("T7", "v2_same_reader"),
        ("T8", "v2_same_reader"),
        (None, None),
        ("T7", "v2_other_reader"),
        ("T8", "v2_other_reader"),
    ]
    # Keys are not compared across releases: without the pairing every match is another reader's.
    unpaired = levels_from_reference(
        centres, [20.0] * 5, experts, np.array([[0, 0, 49.0]]), ["T7"], ["a"]
    )
    assert unpaired[0] == ("T7", "v2_other_reader")
    # An identical reading wins over a nearer vertebra of the paired reader.
    points = np.arange(18.0).reshape(1, 6, 3)
    twin = levels_from_reference(
        np.array([[0, 0, 50.0]]),
        [20.0],
        ["a"],
        np.array([[0, 0, 50.0], [0, 0, 57.0]]),
        ["T7", "T6"],
        ["x", "y"],
        same_reader={"a": "x"},
        points=points,
        ref_points=np.concatenate([points + 0.5, points]),
    )
    assert twin == [("T6", "v2_identical_keypoints")]


def _rows(readings: dict[str, list[np.ndarray]], grades: dict[str, list[int]], levels=None):
    rows = []
    for expert, vertebrae in readings.items():
        for i, p in enumerate(vertebrae):
            h = heights_mm(p)
            row = {
                "folder": "F",
                "series_uid": "1.2.",
                "release": "v1",
                "expert": expert,
                "vertebra_index": i,
                "level": levels[i] if levels else None,
                "height_ant_mm": h[0],
                "height_mid_mm": h[1],
                "height_post_mm": h[2],
                "deformity_ratio": deformity_ratios(*h)["deformity"],
                "genant_grade": grades[expert][i],
            }
            for name, point in zip(POINT_NAMES, p, strict=True):
                row[f"{name}_x_mm"], row[f"{name}_y_mm"], row[f"{name}_z_mm"] = point
            rows.append(row)
    return pd.DataFrame(rows)


def test_consensus_rows_measure_agreement() -> None:
    top, bottom = _vertebra(20, 20, 20, z=30), _vertebra(14, 18, 20, z=0)
    shifted = bottom + np.array([0.0, 0.0, 1.0])  # expert b reads the lower vertebra 1 mm higher
    df = _rows({"a": [top, bottom], "b": [top, shifted]}, {"a": [0, 2], "b": [0, 1]})
    rows = consensus_rows(df)
    table = MosmedConsensusTable.validate(pd.DataFrame(rows).assign(source="mosmed"))
    assert list(table["vertebra"]) == [0, 1] and list(table["grouped_by"]) == ["position"] * 2
    first, second = rows
    assert first["mean_keypoint_distance_mm"] == 0 and first["grade_agreement"] == 1
    assert second["mean_keypoint_distance_mm"] == pytest.approx(1.0)
    assert second["max_keypoint_distance_mm"] == pytest.approx(1.0)
    assert (second["genant_grade"], second["grade_agreement"]) == (2, 0.5)  # tie: the higher
    assert (second["genant_grade_min"], second["genant_grade_max"]) == (1, 2)
    assert second["experts"] == "a,b" and second["level"] is None


def test_consensus_groups_by_level_when_every_reading_has_one() -> None:
    top, bottom = _vertebra(20, 20, 20, z=30), _vertebra(20, 20, 20, z=0)
    # Readings far apart in space but with the same level are the same vertebra by label.
    df = _rows(
        {"a": [top, bottom], "b": [top + np.array([0, 0, 10.0]), bottom]},
        {"a": [0, 0], "b": [0, 0]},
        ["T7", "T8"],
    )
    rows = consensus_rows(df)
    assert [(r["level"], r["n_experts"], r["grouped_by"]) for r in rows] == [
        ("T7", 2, "level"),
        ("T8", 2, "level"),
    ]
    assert rows[0]["mean_keypoint_distance_mm"] == pytest.approx(10.0)
