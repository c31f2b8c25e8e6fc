"""The build stamp (verse_etl/publish/stamp.py): a no-change build answered from file stats, and
every way the stamp must stop answering (then the full check decides)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.unit.test_cli import _PROBE, CONTRACTS, HEAVY
from verse_etl.cases import stat_cache
from verse_etl.params import BuildParams, MosmedParams, SourceParams
from verse_etl.publish.lock import workspace_lock
from verse_etl.publish.stamp import (
    STAMP_NAME,
    CodeFiles,
    check_stamp,
    stamped_build,
    start_stamp,
    write_stamp,
)
from verse_etl.tables.summary import BuildSummary

SUMMARY = BuildSummary(
    rows={"scans": 2, "quarantine": 1},
    cases=3,
    converted=2,
    reused=1,
    stores_written=4,
    quarantined=1,
    failing=0,
    checks_failed={"label_islands": 1},
)
# What a rerun with nothing to change prints for that build.
UNCHANGED = replace(SUMMARY, converted=0, reused=3, stores_written=0)


@dataclass(frozen=True)
class Workspace:
    """Source roots, an identifier mapping outside them, a build folder and a copy of some
    code, as real files."""

    root: Path
    params: BuildParams
    code: CodeFiles

    def stamp(self, params: BuildParams | None = None, summary: BuildSummary = SUMMARY) -> bool:
        """What a build does: sign before it reads, write the stamp once all is published."""
        start = start_stamp(params or self.params, self.code)
        assert start is not None
        return write_stamp(start, summary)

    def answer(self, params: BuildParams | None = None) -> BuildSummary | None:
        return stamped_build(params or self.params, code=self.code)


def _files(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    _files(
        tmp_path / "src",
        {
            "verse/dataset-01/rawdata/sub-gl003/sub-gl003_ct.nii.gz": b"ct" * 100,
            "verse/dataset-01/derivatives/sub-gl003/sub-gl003_ctd.json": b'[{"label": 20}]',
            "mosmed/dicom/S1/1.dcm": b"DICM" * 50,
            "mosmed/annotation/S1.json": b"{}",
        },
    )
    _files(tmp_path, {"mapping.csv": b"old_folder,old_series_uid,folder,series_uid\n"})
    _files(
        tmp_path / "build",
        {
            "cases/verse/gl003.json": b'{"case": "gl003"}',
            "volumes/verse/gl003.0123456789ab.zarr/zarr.json": b"{}",
            "tables/scans/source=verse/release=verse19/part-0.parquet": b"PAR1" * 20,
            "report/index.html": b"<html></html>",
            "metrics.json": b"{}",
        },
    )
    _files(tmp_path / "code", {"pkg/__init__.py": b"", "pkg/case.py": b"KEY = 1\n"})
    (tmp_path / "site" / "numpy-2.1.0.dist-info").mkdir(parents=True)
    params = BuildParams(
        out=str(tmp_path / "build"),
        sources=SourceParams(
            verse=str(tmp_path / "src/verse"), mosmed=str(tmp_path / "src/mosmed")
        ),
        mosmed=MosmedParams(id_mapping=str(tmp_path / "mapping.csv")),
    )
    code = CodeFiles(packages=(tmp_path / "code/pkg",), site_dirs=(tmp_path / "site",))
    # A source is trusted once its stat is older than the settle time of the digest caches.
    time.sleep(stat_cache.SETTLE_NS / 1e9 + 0.02)
    return Workspace(tmp_path, params, code)


def test_unchanged_workspace_is_answered_from_the_stamp(workspace: Workspace) -> None:
    assert workspace.answer() is None  # no stamp yet
    assert workspace.stamp()
    assert workspace.answer() == UNCHANGED
    assert workspace.answer() == UNCHANGED  # the check itself changes nothing it covers
    # The workspace lock and a stamp being written are not outputs.
    with workspace_lock(Path(workspace.params.out)):
        pass
    (Path(workspace.params.out) / f"{STAMP_NAME}.123.tmp").write_text("")
    assert workspace.answer() == UNCHANGED


def test_the_stamp_says_which_part_changed(workspace: Workspace) -> None:
    # `verse-etl build` goes straight to the build when sources changed (the full check could
    # only find out by hashing them); for any other part it asks the full check.
    def changed(params: BuildParams | None = None, code: CodeFiles | None = None) -> str | None:
        return check_stamp(params or workspace.params, code=code or workspace.code).changed

    assert changed() is None  # no stamp to compare with
    assert workspace.stamp()
    assert changed() is None and workspace.answer() == UNCHANGED
    assert changed(replace(workspace.params, workers=7)) == "params"
    (workspace.root / "code/pkg/case.py").write_text("KEY = 2\n")
    assert changed() == "code"
    (workspace.root / "code/pkg/case.py").write_text("KEY = 1\n")
    (Path(workspace.params.out) / "metrics.json").write_text('{"rows": 1}')
    assert changed() == "outputs"
    (workspace.root / "src/mosmed/annotation/S2.json").write_text("{}")
    assert changed() == "sources"  # compared before the outputs


def _rewrite_same_size(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])


def _edit_keeping_mtime(path: Path) -> None:
    st = path.stat()
    _rewrite_same_size(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the ctime tells


def _replace_by_copy(path: Path) -> None:
    copy = path.with_name(path.name + ".new")
    shutil.copy2(path, copy)  # same bytes, size and mtime: only the inode and ctime tell
    copy.replace(path)


def _src(ws: Workspace, name: str) -> Path:
    return ws.root / "src" / name


def _out(ws: Workspace, name: str) -> Path:
    return Path(ws.params.out) / name


CHANGES: dict[str, Callable[[Workspace], object]] = {
    "source edited, same size": lambda ws: _rewrite_same_size(
        _src(ws, "verse/dataset-01/derivatives/sub-gl003/sub-gl003_ctd.json")
    ),
    "source edited, mtime set back": lambda ws: _edit_keeping_mtime(
        _src(ws, "mosmed/dicom/S1/1.dcm")
    ),
    "source added": lambda ws: _src(ws, "mosmed/annotation/S2.json").write_bytes(b"{}"),
    "source removed": lambda ws: _src(ws, "mosmed/annotation/S1.json").unlink(),
    "source folder added": lambda ws: _src(ws, "mosmed/dicom/S2").mkdir(),
    "source replaced by a copy": lambda ws: _replace_by_copy(_src(ws, "mosmed/dicom/S1/1.dcm")),
    "id mapping edited": lambda ws: (ws.root / "mapping.csv").write_bytes(b"old_folder\n"),
    "output deleted": lambda ws: _out(ws, "cases/verse/gl003.json").unlink(),
    "output truncated": lambda ws: _out(
        ws, "tables/scans/source=verse/release=verse19/part-0.parquet"
    ).write_bytes(b"PAR1"),
    "output edited, same size": lambda ws: _rewrite_same_size(_out(ws, "report/index.html")),
    "output added": lambda ws: _out(ws, "volumes/verse/ghost.zarr").mkdir(),
    "code edited": lambda ws: (ws.root / "code/pkg/case.py").write_bytes(b"KEY = 2\n"),
    "code added": lambda ws: (ws.root / "code/pkg/more.py").write_bytes(b""),
    "dependency upgraded": lambda ws: (ws.root / "site/numpy-2.1.0.dist-info").rename(
        ws.root / "site/numpy-2.2.0.dist-info"
    ),
    "stamp unreadable": lambda ws: _out(ws, STAMP_NAME).write_text("{not json"),
    "stamp of another format": lambda ws: _out(ws, STAMP_NAME).write_text(
        json.dumps({**json.loads(_out(ws, STAMP_NAME).read_text()), "format": 0})
    ),
    "stamp gone": lambda ws: _out(ws, STAMP_NAME).unlink(),
    "stamp's summary damaged": lambda ws: _edit_summary(ws, rows=[2, 1]),
    "stamp's summary of another shape": lambda ws: _edit_summary(ws, tables=2),
    "stamp's summary not counts": lambda ws: _edit_summary(ws, cases="3"),
}


def _edit_summary(ws: Workspace, **fields: object) -> None:
    record = json.loads(_out(ws, STAMP_NAME).read_text())
    _out(ws, STAMP_NAME).write_text(
        json.dumps({**record, "summary": {**record["summary"], **fields}})
    )


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_it_covers_falls_through_to_the_full_check(
    workspace: Workspace, change: str
) -> None:
    assert workspace.stamp() and workspace.answer() == UNCHANGED
    CHANGES[change](workspace)
    assert workspace.answer() is None


@pytest.mark.parametrize(
    "other",
    [
        {"out": "s3://bucket/build"},
        {"rehash": True},
        {"workers": 3},  # any option: the full check decides, then stamps the new ones
        {"prune": True},
        {"sources": SourceParams(verse="", mosmed="")},
    ],
    ids=lambda other: next(iter(other)),
)
def test_other_parameters_fall_through(workspace: Workspace, other: dict[str, object]) -> None:
    assert workspace.stamp()
    assert workspace.answer(replace(workspace.params, **other)) is None  # type: ignore[arg-type]
    assert workspace.answer() == UNCHANGED


def test_relative_paths_from_another_folder_fall_through(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace.root)
    relative = replace(
        workspace.params,
        out="build",
        sources=SourceParams(verse="src/verse", mosmed="src/mosmed"),
    )
    assert workspace.stamp(relative) and workspace.answer(relative) == UNCHANGED
    monkeypatch.chdir(workspace.root / "src")  # the same text names other folders here
    assert workspace.answer(relative) is None


def test_a_source_left_out_is_not_signed_but_its_outputs_are(workspace: Workspace) -> None:
    # As the full check: a source left out of the build is not read, its outputs are kept.
    verse_only = replace(
        workspace.params, sources=SourceParams(verse=workspace.params.sources.verse, mosmed="")
    )
    assert workspace.stamp(verse_only)
    _src(workspace, "mosmed/annotation/S2.json").write_bytes(b"{}")
    assert workspace.answer(verse_only) == UNCHANGED
    _out(workspace, "cases/mosmed").mkdir()
    assert workspace.answer(verse_only) is None


def test_a_source_edited_while_the_build_runs_is_seen_next_time(workspace: Workspace) -> None:
    # Signed before the build reads the sources, stamped after it wrote everything: an edit in
    # between is not covered by what the build made.
    start = start_stamp(workspace.params, workspace.code)
    assert start is not None and start.trusted
    _rewrite_same_size(_src(workspace, "mosmed/dicom/S1/1.dcm"))
    assert write_stamp(start, SUMMARY)
    assert workspace.answer() is None


def test_a_source_changed_just_before_the_build_writes_no_stamp(workspace: Workspace) -> None:
    assert workspace.stamp()
    # Changed within the settle time: a second change in the same timestamp tick could keep
    # its stat, so neither the digest caches nor the stamp trust it.
    _rewrite_same_size(_src(workspace, "verse/dataset-01/rawdata/sub-gl003/sub-gl003_ct.nii.gz"))
    start = start_stamp(workspace.params, workspace.code)
    assert start is not None and not start.trusted
    assert not _out(workspace, STAMP_NAME).exists()  # the old stamp went at the start
    assert not write_stamp(start, SUMMARY)
    assert workspace.answer() is None
    time.sleep(stat_cache.SETTLE_NS / 1e9 + 0.02)
    assert workspace.stamp() and workspace.answer() == UNCHANGED


def test_outputs_written_just_before_the_stamp_are_stamped(workspace: Workspace) -> None:
    # A build writes its report last, then the stamp: the file system's clock, not a settle
    # time, says whether the report is older than the signature (the next rerun is fast).
    _rewrite_same_size(_out(workspace, "report/index.html"))
    assert workspace.stamp() and workspace.answer() == UNCHANGED


def test_an_output_in_the_clock_tick_of_the_stamp_writes_none(workspace: Workspace) -> None:
    # A file stamped in the future stays in (or after) the tick of the stamp's signature
    # however long the writer waits: no stamp (the next full check writes one).
    report = _out(workspace, "report/index.html")
    ahead = time.time_ns() + 60 * 10**9
    os.utime(report, ns=(ahead, ahead))
    assert not workspace.stamp()
    assert not _out(workspace, STAMP_NAME).exists() and workspace.answer() is None
    assert not list(Path(workspace.params.out).glob(f"{STAMP_NAME}*"))  # no temporary left


def test_builds_that_the_full_check_would_repeat_write_no_stamp(workspace: Workspace) -> None:
    # Cases gone from a source but kept: the full check sees saved results of no case.
    assert not workspace.stamp(summary=replace(SUMMARY, pruning={"verse": "1 case kept"}))
    assert not workspace.stamp(summary=replace(SUMMARY, failing=1))
    assert workspace.answer() is None


def test_links_planted_at_the_stamp_names_write_nothing_outside(workspace: Workspace) -> None:
    victim = workspace.root / "victim.txt"
    victim.write_text("keep")
    stamp = _out(workspace, STAMP_NAME)
    stamp.symlink_to(victim)
    start = start_stamp(workspace.params, workspace.code)
    assert start is not None and not stamp.is_symlink()  # the link went, not its target
    tmp = _out(workspace, f"{STAMP_NAME}.{os.getpid()}.tmp")
    tmp.symlink_to(victim)
    assert not write_stamp(start, SUMMARY)
    assert victim.read_text() == "keep" and not stamp.exists()


def test_a_busy_workspace_falls_through(workspace: Workspace) -> None:
    assert workspace.stamp()
    with workspace_lock(Path(workspace.params.out)):
        assert workspace.answer() is None


def test_settle_times_are_no_shorter_than_the_digest_caches() -> None:
    from verse_etl.publish import stamp

    assert stamp.SETTLE_NS >= stat_cache.SETTLE_NS
    assert stamp.SETTLE_COARSE_NS >= stat_cache.SETTLE_COARSE_NS


def test_cli_answers_from_the_stamp_without_the_heavy_imports(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stamp of the code as installed, written here, is read by a fresh `verse-etl build`.
    monkeypatch.chdir(workspace.root)
    params = replace(workspace.params, mosmed=MosmedParams())
    start = start_stamp(params)
    assert start is not None and write_stamp(start, SUMMARY)
    argv = [
        "build",
        "--params",
        str(workspace.root / "none.yaml"),  # defaults, as `params` above
        "--verse",
        params.sources.verse,
        "--mosmed",
        params.sources.mosmed,
        "--out",
        params.out,
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workspace.root,
        env={**os.environ, "PREFECT_HOME": str(workspace.root / "prefect")},
    )
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["code"] in (0, None), proc.stdout + proc.stderr
    assert "nothing changed since the last build" in proc.stdout, proc.stdout + proc.stderr
    assert "cases: 3 (0 built, 3 unchanged); stores written: 0" in proc.stdout
    loaded = set(report["modules"])
    heavy = sorted(m for m in loaded if m.split(".")[0] in (*HEAVY, "pyarrow") or m in CONTRACTS)
    assert not heavy, f"the stamped no-change build imported {heavy[:10]}"
    assert "verse_etl.publish.current" not in loaded  # the full check did not run
