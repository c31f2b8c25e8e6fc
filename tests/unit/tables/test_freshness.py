"""Tables whose inputs are unchanged are not assembled nor written again; any changed input (a
case result, the check parameters, the tables code, the card's inputs, a published file)
rebuilds them as one new generation (verse_etl/tables/freshness.py)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from verse_etl.cases.outputs import load_case_results
from verse_etl.params import CheckParams, VolumeParams
from verse_etl.sources.verse import discover_verse_sources
from verse_etl.tables import freshness
from verse_etl.tables.assemble import assemble
from verse_etl.verse.case import build_verse_scan

VOLUMES = VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2), threads=1)
CHECKS = CheckParams()


@pytest.fixture(scope="module")
def built(catalog_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Case results of two scans of the session's tiny sample (tests/conftest.py)."""
    root = catalog_sample / "verse"
    out = tmp_path_factory.mktemp("freshness")
    for scan in discover_verse_sources(root).scans[:2]:  # two are enough for these tests
        build_verse_scan(scan, root, out, VOLUMES, CHECKS)
    return out


@pytest.fixture
def out(built: Path, tmp_path: Path) -> Path:
    """A copy of the built cases with tables assembled once."""
    copy = tmp_path / "build"
    shutil.copytree(built, copy)
    assemble(load_case_results(copy), copy, CHECKS)
    return copy


def _generation(out: Path) -> int:
    return (out / "tables").stat().st_ino  # a new generation is a new folder switched in


def test_unchanged_inputs_write_nothing(out: Path) -> None:
    before = _generation(out), freshness.published_files(out)
    first = assemble(load_case_results(out), out, CHECKS)
    assert (_generation(out), freshness.published_files(out)) == before
    assert not list(out.glob(".generation-*"))
    assert first.rows["scans"] == 2 and first.rows["vertebrae"] > 0  # the recorded summary


def test_each_changed_input_rewrites_the_tables(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One input more changed at each step (result, checks, code, a published file, the card's
    inputs): each step writes a new generation, and records it."""
    results = load_case_results(out)
    checks, inputs = CHECKS, None

    def card(_generation: Path) -> None:
        return None

    def rewritten(before_switch=None) -> None:
        before = _generation(out)
        summary = assemble(results, out, checks, before_switch=before_switch, inputs=inputs)
        assert _generation(out) != before and summary.rows["scans"] == 2
        recorded = freshness.unchanged_tables(out, freshness.results_key(results, checks, inputs))
        assert (recorded is None) == (before_switch is not None and inputs is None)

    results[0].rows["scans"][0]["kvp"] = 99.0
    rewritten()
    checks = replace(CHECKS, modes={"label_islands": "ignore"})
    rewritten()
    real = freshness.tables_code_identity()  # the contracts or the tables step edited
    monkeypatch.setattr(freshness, "tables_code_identity", lambda: real + "-edited")
    rewritten()
    next((out / "tables" / "scans").rglob("*.parquet")).unlink()
    rewritten()
    # What a before_switch (the dataset card) writes is keyed by the inputs it is given...
    inputs = {"card": 1}
    rewritten(card)
    inputs = {"card": 2}
    rewritten(card)
    # ... and given none, they are unknown: the tables are always written.
    inputs = None
    rewritten(card)
    rewritten(card)


def test_saved_results_key_as_the_results_in_memory(out: Path) -> None:
    """The key of the saved files' bytes is the key of the loaded results (so a check can read
    the files without parsing them)."""
    from verse_etl.cases.outputs import SOURCES

    digests = [
        (source, p.name, freshness.result_digest(p.read_text(encoding="utf-8")))
        for source in SOURCES
        for p in sorted((out / "cases" / source).glob("*.json"))
    ]
    results = load_case_results(out)
    assert freshness.tables_key(digests, CHECKS, None) == freshness.results_key(
        results, CHECKS, None
    )
