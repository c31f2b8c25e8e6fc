"""Pruning a source: what goes with its cases besides stores and case results."""

from __future__ import annotations

from pathlib import Path

from verse_etl.cases.outputs import prune_source, store_paths
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


def test_a_store_a_result_keeps_is_held_once_and_not_pruned(tmp_path: Path) -> None:
    out = tmp_path / "build"
    in_rows, kept_only, stray = (
        f"volumes/mosmed/F/1.2.{k}.zarr" for k in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc")
    )
    for rel in (in_rows, kept_only, stray):
        (out / rel).mkdir(parents=True)
    result = CaseResult(source="mosmed", case_id="F", fingerprint="k")
    result.add("series", {"store_path": in_rows})
    # What a study keeps to reuse (CaseResult.stores) is held even where no row points at it.
    result.stores = {in_rows: {"key": "a"}, kept_only: {"key": "b"}}

    assert store_paths([result]) == [in_rows, kept_only]  # once each, rows first
    deleted = prune_source(out, "mosmed", [result])
    assert [p.relative_to(out).as_posix() for p in deleted] == [stray]
