"""The build report and QC pictures, rendered in a real browser (Debian's headless Chromium)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.e2e.library_build import build_tiny
from verse_etl.report import write_report

pytestmark = pytest.mark.slow


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium not found: run `make browser` (Debian's chromium package)")
    return path


def _chromium_args(profile: Path) -> list[str]:
    return [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    src, out = tmp_path_factory.mktemp("report-src"), tmp_path_factory.mktemp("report-build")
    build_tiny(src, out, seed=9)
    return write_report(out), out


def test_report_shows_counts_charts_quarantine_and_every_picture(report, tmp_path: Path) -> None:
    page, out = report
    dom = subprocess.run(
        [*_chromium_args(tmp_path / "profile"), "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    scans = pd.read_parquet(out / "tables" / "scans")
    assert "<h1>verse-etl build report</h1>" in dom
    assert 'id="distributions"' in dom and dom.count("<svg") >= 5
    assert "Quarantine (0 records)" in dom
    expected = len(scans) + 1  # every VerSe scan and the annotated MosMed series
    assert f"QC pictures ({expected})" in dom
    # The page marks how many pictures the browser actually decoded.
    assert f'data-images-loaded="{expected}"' in dom and f'data-images-total="{expected}"' in dom
    for scan_id in scans["scan_id"]:
        assert f"qc/verse-{scan_id}.png" in dom


def test_screenshot_and_qc_pictures_are_real_images(report, tmp_path: Path) -> None:
    page, out = report
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            *_chromium_args(tmp_path / "profile"),
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] >= 1000 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    for png in (out / "report" / "qc").glob("verse-*.png"):
        picture = np.asarray(Image.open(png).convert("RGB"))
        # Labels are drawn in colour over a grey CT: some pixels are neither grey nor black.
        colourful = np.abs(picture[..., 0].astype(int) - picture[..., 2].astype(int)) > 40
        assert colourful.mean() > 0.01, png
