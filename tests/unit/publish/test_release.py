"""Release notes come from comparing two versions of the tables."""

from __future__ import annotations

import pandas as pd

from verse_etl.publish.release import ReleaseNotes, compare_tables


def _tables(
    scans: list[tuple[str, str]], vertebrae: list[tuple[str, int, float]], checks: list[str]
):
    return {
        "scans": pd.DataFrame(scans, columns=["scan_id", "ct_sha256"]),
        "vertebrae": pd.DataFrame(vertebrae, columns=["scan_id", "label", "centroid_i"]),
        "series": pd.DataFrame({"series_uid": pd.Series([], dtype=str)}),
        "mosmed_vertebrae": pd.DataFrame({"series_uid": pd.Series([], dtype=str)}),
        "quarantine": pd.DataFrame({"check_name": checks}),
    }


def test_added_changed_removed_and_quarantine_moves() -> None:
    before = _tables(
        [("a", "1"), ("b", "2"), ("c", "3")], [("a", 20, 1.0), ("b", 20, 2.0)], ["read"]
    )
    now = _tables(
        [("a", "1"), ("b", "2"), ("d", "4")], [("a", 20, 1.0), ("b", 20, 2.5)], ["x", "x"]
    )
    changes, quarantine = compare_tables(before, now)
    assert changes["scans"].added == ("d",)
    assert changes["scans"].changed == ("b",)  # only a vertebra of b moved
    assert changes["scans"].removed == ("c",)
    assert quarantine == {"read": (1, 0), "x": (0, 2)}
    text = ReleaseNotes(
        tag="v2", previous="v1", tables=changes, quarantine=quarantine
    ).to_markdown()
    assert (
        "- changed (1): b" in text
        and "| x | 0 | 2 | +2 |" in text
        and "| **total** | 1 | 2 | +1 |" in text
    )


def test_first_release_lists_everything_as_added() -> None:
    changes, quarantine = compare_tables(None, _tables([("a", "1")], [], []))
    assert changes["scans"].added == ("a",) and not changes["scans"].removed
    assert quarantine == {}
