"""The build report and QC pictures, rendered in a real browser (Debian's headless Chromium)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from PIL import Image

from tests.e2e.library_build import build_tiny
from verse_etl.report.page import _tables, render_report, write_pictures, write_report
from verse_etl.report.qc import TEXT, Panel

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


def _dump_dom(page: Path, profile: Path) -> str:
    return subprocess.run(
        [*_chromium_args(profile), "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


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


def test_flagged_cases_come_first_and_their_records_link_to_their_pictures(
    report, tmp_path: Path
) -> None:
    """Quarantine records of a case link to its picture, which comes first; every picture is a
    link to itself at full size and the browser decodes it at the size of the PNG."""
    page, out = report
    tables = _tables(out)
    pictures = write_pictures(out, tables)
    last = sorted(p.case_id for p in pictures if p.src.startswith("qc/verse-"))[-1]
    columns = ["source", "case_id", "file", "check_name", "reason"]
    tables["quarantine"] = pd.DataFrame(
        [["verse", last, f"{last}_ctd.json", "label_islands", "two islands"]] * 2, columns=columns
    )
    flagged = page.with_name("flagged.html")
    flagged.write_text(render_report(tables, pictures), encoding="utf-8")
    dom = _dump_dom(flagged, tmp_path / "profile")
    figures = re.findall(r'<figure class="(qc[^"]*)" id="([^"]+)">(.*?)</figure>', dom, re.S)
    assert len(figures) == len(pictures)
    assert (
        figures[0][:2] == ("qc flagged", f"qc-{last}") and "2 quarantine records" in figures[0][2]
    )
    assert all(css == "qc" for css, _, _ in figures[1:])
    assert dom.count(f'<a href="#qc-{last}">picture</a>') == 2
    for _, _, body in figures:
        href, src, size = re.search(
            r'<a href="([^"]+)" class="full-size"><img src="([^"]+)".*?data-natural-size="(\d+x\d+)"',
            body,
            re.S,
        ).groups()
        assert href == src and (out / "report" / src).is_file()
        with Image.open(out / "report" / src) as png:
            assert size == f"{png.width}x{png.height}"


def test_each_picture_names_every_level_where_its_centroid_is(report) -> None:
    """Each picture's level names are drawn (text-coloured pixels) beside the vertebra they name:
    placements from the renderer's sidecar against the world centroids of the tables, and every
    panel against the store's own geometry."""
    _, out = report
    tables = _tables(out)
    vertebrae, keypoints = tables["vertebrae"], tables["mosmed_vertebrae"]
    for sidecar in sorted((out / "report" / "qc").glob("*.json")):
        drawn = json.loads(sidecar.read_text())
        png = sidecar.with_suffix(".png")
        pixels = np.asarray(Image.open(png).convert("RGB"))
        assert pixels.shape[:2] == (drawn["height"], drawn["width"])
        assert drawn["height"] >= 200 and drawn["pixel_mm"] <= 1.0
        text = np.all(pixels == TEXT, axis=2)
        panels = [Panel(**p) for p in drawn["panels"]]
        placements = [p for p in drawn["placements"] if p["kind"] == "level"]
        if png.name.startswith("verse-"):
            scan_id = png.stem.removeprefix("verse-")
            rows = vertebrae[vertebrae["scan_id"] == scan_id]
            points = {
                r.level: (r.centroid_x_mm, r.centroid_y_mm, r.centroid_z_mm)
                for r in rows.itertuples()
            }
            store = out / tables["scans"].set_index("scan_id").loc[scan_id, "store_path"]
            affine = np.asarray(zarr.open_group(store, mode="r").attrs["verse_etl"]["affine"])
            shape = zarr.open_group(store, mode="r")["0"].shape
            corners = np.array(
                [
                    [a, b, c]
                    for a in (-0.5, shape[0] - 0.5)
                    for b in (-0.5, shape[1] - 0.5)
                    for c in (-0.5, shape[2] - 0.5)
                ]
            )
            world = corners @ affine[:3, :3].T + affine[:3, 3]
            for panel in panels:
                assert panel.z_max_mm == pytest.approx(world[:, 2].max())
                assert panel.across_max_mm == pytest.approx(world[:, panel.across_axis].max())
                assert panel.height == math.ceil(np.ptp(world[:, 2]) / panel.pixel_mm)
        else:
            rows = keypoints[keypoints["series_uid"].isin(tables["series"]["series_uid"])]
            points = {}
            for panel in panels:
                for level, group in rows[rows["release"] == panel.name].groupby("level"):
                    cols = [c for c in group.columns if c.endswith(("_x_mm", "_y_mm", "_z_mm"))]
                    xyz = (
                        group[cols].to_numpy(dtype=float).reshape(len(group), -1, 3).reshape(-1, 3)
                    )
                    points[(panel.name, level)] = tuple(xyz.mean(axis=0))
        assert points
        for panel in panels:
            for key, world_mm in points.items():
                level = key if isinstance(key, str) else key[1]
                if not isinstance(key, str) and key[0] != panel.name:
                    continue
                (placed,) = [
                    p for p in placements if p["panel"] == panel.name and p["text"] == level
                ]
                x, y = panel.pixel(world_mm)
                assert placed["anchor"] == pytest.approx([x, y], abs=0.5), (png.name, level)
                x0, y0, x1, y1 = placed["box"]
                # Beside it: level with it, on one side, clear of the vertebra but near.
                assert abs((y0 + y1) / 2 - y) < 20 and (x1 <= x or x0 >= x)
                assert min(abs(x1 - x), abs(x0 - x)) < 80
                assert text[y0:y1, x0:x1].sum() >= 10, (png.name, panel.name, level)
        # No text colour anywhere else: what the sidecar says was drawn is all that was drawn.
        outside = text.copy()
        for p in drawn["placements"]:
            x0, y0, x1, y1 = p["box"]
            outside[y0:y1, x0:x1] = False
        assert not outside.any(), png.name
