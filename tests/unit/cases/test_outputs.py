"""Pruning a source: what goes with its cases besides stores and case results."""

from __future__ import annotations

from pathlib import Path

from verse_etl.cases.outputs import prune_source
from verse_etl.cases.records import CaseResult
from verse_etl.paths import digest_cache_path


def test_pruning_clears_stat_caches_of_gone_cases_and_of_killed_writes(tmp_path: Path) -> None:
    out = tmp_path / "build"
    kept, gone = digest_cache_path(out, "verse", "a"), digest_cache_path(out, "verse", "b")
    kept.parent.mkdir(parents=True)
    for path in (kept, gone, kept.with_name(f"{kept.name}.tmp-12345")):
        path.write_text("{}")
    other = digest_cache_path(out, "mosmed", "b")  # another source is never touched
    other.parent.mkdir(parents=True)
    other.write_text("{}")

    deleted = prune_source(out, "verse", [CaseResult(source="verse", case_id="a", fingerprint="")])

    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]
    assert other.exists()
    assert deleted == []  # caches are not outputs: the pruning log lists stores and results
