"""Ingest progress: the figures people read (count, rate, MB/s, ETA), the periodic plain lines,
the heartbeat of a long case, and the input size the MB/s figure comes from."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

from verse_etl.flows.progress import IngestProgress, heartbeat, source_bytes

from verse_etl.io.files import SourceFile


def test_plain_lines_count_rate_and_eta_and_agree_with_the_total() -> None:
    lines: list[str] = []
    percents: list[float] = []
    with IngestProgress(
        3, 3_000_000, lines.append, percents.append, terminal=False, every=0.05
    ) as p:
        first = p.case_done(1_000_000)
        time.sleep(0.3)  # no case finishes for a while: a periodic line says where it is
        p.case_done(1_000_000)
        last = p.case_done(1_000_000)
    assert "cases/s" in first and "MB/s" in first and "ETA" in first
    assert "ETA -" in last  # done: no estimate left
    assert any(line.startswith("progress: 1/3 cases") for line in lines), lines
    assert percents == [100 / 3, 200 / 3, 100.0]
    assert p.done == p.total == 3


def test_cases_kept_as_saved_count_as_done_but_not_in_the_rate() -> None:
    # 98 of 100 cases keep their saved results at once: the rate, MB/s and ETA are those of the
    # cases that run, not thousands of "cases/s" from files looked at.
    percents: list[float] = []
    with IngestProgress(100, 10**9, lambda line: None, percents.append, terminal=False) as p:
        for _ in range(98):
            kept = p.case_done(10_000_000, kept=True)
        time.sleep(0.2)
        ran = p.case_done(1_000_000)
        last = p.case_done(1_000_000)
    assert "0.00 cases/s, 0.0 MB/s, ETA -" in kept, kept
    rate = float(ran.split(" cases/s")[0].rsplit(" ", 1)[1])
    assert 0 < rate < 10, ran  # one case in ~0.2 s, not 99
    assert p.done == 100 and p.ran == 2 and percents[-1] == 100.0 and "ETA -" in last


def test_terminal_bar_runs_and_gives_back_the_log_consoles() -> None:
    from verse_etl.flows.progress import _console_handlers

    before = [h.console for h in _console_handlers()]
    with IngestProgress(2, 10, print, terminal=True) as p:
        p.case_done(5)
        p.case_done(5)
    assert [h.console for h in _console_handlers()] == before
    assert p._bar is not None and p._bar.finished


def test_heartbeat_says_a_long_case_is_still_running() -> None:
    lines: list[str] = []
    with heartbeat(lines.append, "verse gl003", every=0.05):
        time.sleep(0.3)
    assert lines and all(line.startswith("verse gl003: still running (") for line in lines)
    count = len(lines)
    time.sleep(0.15)
    assert len(lines) == count  # stops with the case


def test_cases_side_by_side_each_say_so_from_one_thread() -> None:
    import threading

    lines: list[str] = []
    before = threading.active_count()
    with heartbeat(lines.append, "slow", every=0.2):
        time.sleep(0.05)
        # A case that starts later with a shorter beat is not kept waiting for the first's.
        with heartbeat(lines.append, "quick", every=0.03):
            time.sleep(0.15)
            threads = threading.active_count()
        time.sleep(0.2)
    assert any(line.startswith("quick: still running") for line in lines), lines
    assert any(line.startswith("slow: still running") for line in lines), lines
    assert threads <= before + 1  # at most the one heartbeat thread, not one a case


def test_source_bytes_counts_files_zip_members_and_dicom_folders(tmp_path: Path) -> None:
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"x" * 1000)
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("release/mask.nii.gz", b"y" * 500)  # stored: compressed size is 500
    member = zipfile.ZipFile(archive).getinfo("release/mask.nii.gz").compress_size
    scan = SimpleNamespace(
        files=(
            SourceFile(ct),
            SourceFile(archive, "release/mask.nii.gz"),
            SourceFile(tmp_path / "gone"),
        )
    )
    assert source_bytes(scan) == 1000 + member
    dicom = tmp_path / "study"
    (dicom / "series").mkdir(parents=True)
    for i in range(3):
        (dicom / "series" / f"{i}.dcm").write_bytes(b"d" * 100)
    assert source_bytes(SimpleNamespace(dicom_dir=dicom, archive=archive)) == 300
    assert source_bytes(SimpleNamespace(dicom_dir=None, archive=archive)) == archive.stat().st_size
