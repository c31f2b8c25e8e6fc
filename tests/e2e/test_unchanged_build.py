"""A build with nothing to change is answered from the build folder before Prefect starts
(verse_etl/publish/current.py), and anything a build would change is seen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from tests.e2e.library_build import build_sources
from verse_etl.params import BuildParams, SourceParams
from verse_etl.publish.current import unchanged_build
from verse_etl.publish.stamp import stamped_build
from verse_etl.report.page import write_report


def _changed(params: BuildParams, expected: str) -> None:
    assert stamped_build(params) is None  # the stamp, asked first, falls through
    check = unchanged_build(params)
    assert check.summary is None and expected in check.reason, check.reason


def test_nothing_to_change_is_answered_before_prefect(catalog_sample: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(catalog_sample, src)
    time.sleep(0.2)  # files changed within 100 ms of their hashing are hashed again next time
    out = tmp_path / "build"
    params = BuildParams(
        out=str(out), sources=SourceParams(verse=str(src / "verse"), mosmed=str(src / "mosmed"))
    )
    _changed(params, "no build yet")
    built = build_sources(params)
    write_report(out)
    check = unchanged_build(params)
    assert check.summary is not None, check.reason
    assert check.summary.rows == built.rows and check.summary.converted == 0
    # The full check stamped what it found unchanged: the stamp answers the same.
    assert stamped_build(params) == check.summary

    # Each thing a build would change, undone after it is seen.
    report = out / "report" / "index.html"
    text = report.read_text()
    report.write_text(text + " ")
    _changed(params, "report")
    report.write_text(text)
    ghost = out / "volumes" / "verse" / "ghost.zarr"
    ghost.mkdir()
    _changed(params, "stores differ")
    ghost.rmdir()
    gone = out / "cases" / "verse" / "gone.json"
    gone.write_text("{}")
    _changed(params, "saved results differ")
    gone.unlink()
    _changed(
        replace(params, checks=replace(params.checks, modes={"label_islands": "raise"})), "tables"
    )
    _changed(replace(params, rehash=True), "--rehash")
    assert unchanged_build(params).summary is not None

    # The command line says so and exits 0 without a flow run; --force would run it.
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "verse-etl"),
            "build",
            "--verse",
            str(src / "verse"),
            "--mosmed",
            str(src / "mosmed"),
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing changed since the last build" in done.stdout
    assert "Prefect" not in done.stdout + done.stderr and not (tmp_path / "prefect").exists()

    # A source file whose stat changed is read again by a build: that is a change.
    centroids = next((src / "verse").rglob("*_ctd.json"))
    centroids.write_bytes(centroids.read_bytes())
    _changed(params, "verse ")
