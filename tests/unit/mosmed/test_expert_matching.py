"""The v1 <-> v2 reader correspondence, derived from keypoints, on the 20 real file pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verse_etl.mosmed.annotations import read_annotation
from verse_etl.mosmed.expert_matching import pair_experts
from verse_etl.mosmed.matching import levels_from_reference

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
V1 = SHARED / "fixtures" / "mosmed" / "annotation"
V2 = SHARED / "fixtures" / "mosmed" / "annotation_v2"


def _points(path: Path) -> dict[str, np.ndarray]:
    ann = read_annotation(path)
    return {e: np.array([v.points for v in ann.vertebrae if v.expert == e]) for e in ann.experts}


@pytest.fixture(scope="module")
def real_pairs() -> list[tuple[str, dict, dict]]:
    files = sorted(V1.glob("*.json"))
    if len(files) != 20:
        pytest.fail(f"{V1}: expected the 20 real v1 annotation files, got {len(files)}")
    return [(p.stem, _points(p), _points(V2 / p.name)) for p in files]


def test_readers_are_paired_by_identical_keypoints_not_by_key(real_pairs) -> None:
    renumbered = 0
    for folder, v1, v2 in real_pairs:
        pairs = pair_experts(v1, v2, v1, v2)
        assert len(pairs) == len(v1) * len(v2)
        # Reference: which raw vertebra lists repeat each other number for number.
        raw1 = json.loads((V1 / f"{folder}.json").read_text())["Annotation"]
        raw2 = json.loads((V2 / f"{folder}.json").read_text())["Annotation"]
        copies = {
            (e1, e2): sum(
                any(np.reshape(b["segments"], (6, 3)).tolist() == a for b in raw2[e2]) for a in r1
            )
            for e1, r1 in raw1.items()
            for e2 in raw2
        }
        for pair in pairs:
            assert pair.n_identical == copies[(pair.expert_v1, pair.expert_v2)]
        same = {(p.expert_v1, p.expert_v2) for p in pairs if p.same_reader}
        assert same == {k for k, n in copies.items() if n > 0}  # unambiguous in every study
        assert len({a for a, _ in same}) == len(same) == len({b for _, b in same})
        renumbered += sum(a != b for a, b in same)
        for pair in pairs:
            if pair.same_reader and pair.n_identical == pair.n_vertebrae_v1:
                assert pair.mean_keypoint_distance_mm == 0.0
    # MOSMED.md / issue 15: v1 expert2 is v2 expert3 and v1 expert3 is v2 expert2.
    found = {
        (f, p.expert_v1, p.expert_v2)
        for f, v1, v2 in real_pairs
        for p in pair_experts(v1, v2, v1, v2)
        if p.same_reader
    }
    assert ("RLADD02000001667_RLSDD02000001631", "expert2", "expert3") in found
    assert ("RLADD02000020965_RLSDD02000020937", "expert3", "expert2") in found
    assert renumbered >= 10


def test_level_transfer_names_the_rule_on_real_files(real_pairs) -> None:
    """Every v1 vertebra copied into v2 takes that copy's label; name-based pairing would have
    called some of them another reader's."""
    rules: dict[str, int] = {}
    for folder, v1, v2 in real_pairs:
        same = {p.expert_v1: p.expert_v2 for p in pair_experts(v1, v2, v1, v2) if p.same_reader}
        ann2 = read_annotation(V2 / f"{folder}.json")
        ref = np.array([v.points for v in ann2.vertebrae])
        keys = [e for e, pts in v1.items() for _ in pts]
        pts = np.concatenate(list(v1.values()))
        heights = np.linalg.norm(pts[:, 1::2] - pts[:, 0::2], axis=2).mean(axis=1)
        found = levels_from_reference(
            pts.mean(axis=1),
            heights,
            keys,
            ref.mean(axis=1),
            [v.level for v in ann2.vertebrae],
            [v.expert for v in ann2.vertebrae],
            same_reader=same,
            points=pts,
            ref_points=ref,
        )
        for (level, rule), p in zip(found, pts, strict=True):
            rules[str(rule)] = rules.get(str(rule), 0) + 1
            twins = [v.level for v in ann2.vertebrae if np.array_equal(np.array(v.points), p)]
            if twins:
                assert (level, rule) == (twins[0], "v2_identical_keypoints")
    assert rules["v2_identical_keypoints"] > 100 and rules["v2_other_reader"] > 0
