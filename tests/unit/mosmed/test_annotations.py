"""Both annotation releases parse to the same point order; bad vertebrae are reported one by one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verse_etl.errors import InputError
from verse_etl.mosmed.annotations import read_annotation

UID = "1.2.643.5.1.13.13.12.2.77.8252.572573629130436.028237831627236."


def _points(seed: int) -> list[list[float]]:
    return np.random.default_rng(seed).uniform(0, 500, size=(6, 3)).round(3).tolist()


def _write(tmp_path: Path, annotation: dict, folder: str = "F1", bom: bool = False) -> Path:
    path = tmp_path / f"{folder}.json"
    text = json.dumps({"Folder": folder, "SeriesInstanceUID": UID, "Annotation": annotation})
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def test_v1_and_v2_give_the_same_points_in_the_same_order(tmp_path: Path) -> None:
    a, b = _points(0), _points(1)
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    v1 = read_annotation(_write(tmp_path / "1", {"expert3": [a, b]}))
    segments = [
        {"segments": np.asarray(p).reshape(3, 2, 3).tolist(), "type": t}
        for p, t in ((a, "Th11"), (b, "Th12"))
    ]
    v2 = read_annotation(_write(tmp_path / "2", {"expert3": segments}, bom=True))
    assert (v1.release, v2.release) == ("v1", "v2")
    assert v1.series_uid == v2.series_uid == UID  # trailing '.' kept
    assert [v.points for v in v1.vertebrae] == [v.points for v in v2.vertebrae]
    assert [v.points for v in v1.vertebrae] == [tuple(map(tuple, a)), tuple(map(tuple, b))]
    assert [(v.label, v.level) for v in v2.vertebrae] == [("Th11", "T11"), ("Th12", "T12")]
    assert [v.level for v in v1.vertebrae] == [None, None]
    assert not v1.problems and not v2.problems


def test_bad_vertebrae_are_reported_and_the_rest_kept(tmp_path: Path) -> None:
    good = _points(0)
    path = _write(
        tmp_path,
        {
            "expert1": [good, good[:5], [[1, 2, "x"]] * 6, [[1, 2, float("nan")]] * 6],
            "expert2": "not a list",
        },
    )
    ann = read_annotation(path)
    assert [(v.expert, v.index) for v in ann.vertebrae] == [("expert1", 0)]
    problems = sorted(str(p) for p in ann.problems)
    assert len(problems) == 4
    assert all(p.check == "annotation_points" for p in ann.problems)
    assert any(
        "expert1 vertebra 1: expected 6 points of 3 numbers, got 5 item(s)" in p for p in problems
    )
    assert any("expert2: expected a list" in p for p in problems)


def test_unknown_v2_label_keeps_the_vertebra_without_level(tmp_path: Path) -> None:
    seg = np.asarray(_points(2)).reshape(3, 2, 3).tolist()
    ann = read_annotation(_write(tmp_path, {"expert1": [{"segments": seg, "type": "T7"}]}))
    assert [(v.label, v.level) for v in ann.vertebrae] == [("T7", None)]
    (problem,) = ann.problems
    assert problem.check == "annotation_level" and "'T7' is not a level" in str(problem)


@pytest.mark.parametrize(
    "content, check",
    [
        ("{not json", "annotation_json"),
        ('{"Folder": "F1"}', "annotation_keys"),
        ('{"Folder": "F1", "SeriesInstanceUID": "1.2", "Annotation": {}}', "annotation_keys"),
        (
            '{"Folder": "F1", "SeriesInstanceUID": "1.2", "Annotation": {"e": '
            '[[[1,2,3],[1,2,3],[1,2,3],[1,2,3],[1,2,3],[1,2,3]], {"segments": [], "type": "L1"}]}}',
            "annotation_release",
        ),
    ],
)
def test_unusable_files_raise_with_check(tmp_path: Path, content: str, check: str) -> None:
    path = tmp_path / "F1.json"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        read_annotation(path)
    assert info.value.check == check and info.value.path == str(path)
