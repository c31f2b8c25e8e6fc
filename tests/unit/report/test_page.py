"""The report's picture list: one broken store is shown with its reason, the others are drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.unit.report.test_qc import BOX, FAMILIES, _centre, _grid, _phantom, _row, _write_store
from verse_etl.report.page import render_report, write_pictures


def _scans(affine: np.ndarray, releases: dict[str, str], **columns: list[object]) -> pd.DataFrame:
    """The scans table's rows of ``releases`` (scan id -> release): each RAS on ``affine``, its
    store at ``volumes/<id>.zarr``, and ``columns`` besides."""
    ids = list(releases)
    return pd.DataFrame(
        {
            "scan_id": ids,
            "release": list(releases.values()),
            "orientation": ["RAS"] * len(ids),
            "store_path": [f"volumes/{i}.zarr" for i in ids],
            "affine": [affine.ravel().tolist()] * len(ids),
            **columns,
        }
    )


def test_a_picture_that_cannot_be_drawn_is_shown_with_its_reason(tmp_path: Path) -> None:
    """Also: pictures drawn side by side come back in the cases' order, as drawn alone."""
    affine, shape = _grid(*FAMILIES["RAS"])
    _write_store(tmp_path / "volumes" / "good.zarr", affine, *_phantom(affine, shape, BOX))
    scans = _scans(affine, {"good": "verse19", "lost": "verse20"})
    vertebrae = pd.DataFrame([_row(20, "L1", _centre(BOX[20])) | {"scan_id": "good"}])
    # Two at a time (threads): each picture in its case's place, as drawn one at a time.
    good, lost = write_pictures(tmp_path, {"scans": scans, "vertebrae": vertebrae}, workers=2)
    assert good.src == "qc/verse-good.png" and (tmp_path / "report" / good.src).is_file()
    alone = tmp_path / "alone"
    (alone / "volumes").mkdir(parents=True)
    (alone / "volumes" / "good.zarr").symlink_to(tmp_path / "volumes" / "good.zarr")
    write_pictures(alone, {"scans": scans[:1], "vertebrae": vertebrae}, workers=1)
    for name in ("verse-good.png", "verse-good.json"):
        drawn = (tmp_path / "report" / "qc" / name).read_bytes()
        assert drawn == (alone / "report" / "qc" / name).read_bytes()
    assert not good.error and lost.src == "" and "lost.zarr" in lost.error
    page = render_report({}, [good, lost])
    assert 'id="qc-lost"' in page and "QC picture not drawn: " in page


def test_a_picture_is_drawn_again_only_when_its_inputs_change(tmp_path: Path) -> None:
    affine, shape = _grid(*FAMILIES["RAS"])
    _write_store(tmp_path / "volumes" / "a.zarr", affine, *_phantom(affine, shape, BOX))
    scans = _scans(affine, {"a": "verse19"}, ct_voxel_xxh3=["0" * 32])
    vertebrae = pd.DataFrame([_row(20, "L1", _centre(BOX[20])) | {"scan_id": "a"}])
    png = tmp_path / "report" / "qc" / "verse-a.png"

    def drawn(scans: pd.DataFrame, vertebrae: pd.DataFrame) -> bool:
        """Whether write_pictures drew the picture (a new file) rather than keeping it."""
        before = png.stat().st_ino if png.exists() else None
        (picture,) = write_pictures(tmp_path, {"scans": scans, "vertebrae": vertebrae})
        assert not picture.error and (tmp_path / "report" / picture.src).is_file()
        return png.stat().st_ino != before

    assert drawn(scans, vertebrae)
    assert not drawn(scans, vertebrae)  # same store, rows, caption and code: kept
    moved = vertebrae.assign(centroid_x_mm=vertebrae["centroid_x_mm"] + 1.0)
    assert drawn(scans, moved)  # a row drawn on it changed
    assert not drawn(scans, moved)
    assert drawn(scans.assign(ct_voxel_xxh3=["1" * 32]), moved)  # the store's voxels changed
    png.with_suffix(".json").unlink()
    assert drawn(scans.assign(ct_voxel_xxh3=["1" * 32]), moved)  # a file of it is missing


def test_a_value_new_in_one_case_redraws_that_case_only(tmp_path: Path) -> None:
    """A picture's key takes its case's rows out of the whole table: a column that held no
    value anywhere and gains one in one case changes that case's key, not the others'."""
    affine, shape = _grid(*FAMILIES["RAS"])
    for name in ("a", "b"):
        _write_store(tmp_path / "volumes" / f"{name}.zarr", affine, *_phantom(affine, shape, BOX))
    scans = _scans(affine, {"a": "verse19", "b": "verse19"}, mask_voxel_xxh3=[None, None])
    vertebrae = pd.DataFrame(
        [_row(20, "L1", _centre(BOX[20])) | {"scan_id": name} for name in ("a", "b")]
    )
    qc = tmp_path / "report" / "qc"

    def drawn(scans: pd.DataFrame) -> set[str]:
        before = {p.name: p.stat().st_ino for p in qc.glob("*.png")}
        assert not any(
            p.error for p in write_pictures(tmp_path, {"scans": scans, "vertebrae": vertebrae})
        )
        return {p.stem for p in qc.glob("*.png") if before.get(p.name) != p.stat().st_ino}

    assert drawn(scans) == {"verse-a", "verse-b"}
    assert drawn(scans) == set()
    assert drawn(scans.assign(mask_voxel_xxh3=[None, "1" * 32])) == {"verse-b"}


def test_pictures_of_cases_gone_from_the_tables_are_deleted(tmp_path: Path) -> None:
    """The report folder persists between builds: a picture whose case left the tables goes,
    the others and files that are no picture stay."""
    affine, shape = _grid(*FAMILIES["RAS"])
    qc = tmp_path / "report" / "qc"
    qc.mkdir(parents=True)
    for name in ("verse-gone.png", "verse-gone.json", "verse-gone.key", "notes.txt"):
        (qc / name).write_text("old")
    _write_store(tmp_path / "volumes" / "a.zarr", affine, *_phantom(affine, shape, BOX))
    scans = _scans(affine, {"a": "verse19"})
    vertebrae = pd.DataFrame([_row(20, "L1", _centre(BOX[20])) | {"scan_id": "a"}])
    (picture,) = write_pictures(tmp_path, {"scans": scans, "vertebrae": vertebrae})
    assert not picture.error
    assert sorted(p.name for p in qc.iterdir()) == [
        "notes.txt",
        "verse-a.json",
        "verse-a.key",
        "verse-a.png",
    ]
