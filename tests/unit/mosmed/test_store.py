"""A MosMed series' store is reused by a rebuild of the study exactly when its own inputs (the
series' DICOM files, the volume parameters, the store code) are unchanged
(verse_etl/mosmed/store.py): a changed annotation file rebuilds the study's rows, not its stores."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from verse_etl.mosmed import store as store_module
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import VolumeParams
from verse_etl.sources.mosmed import MosmedStudy, discover_mosmed

VOLUMES = VolumeParams(chunks=(32, 32, 32), shard_chunks=(2, 2, 2), threads=1)


@pytest.fixture(scope="module")
def first_build(catalog_sample: Path, tmp_path_factory: pytest.TempPathFactory):
    """The session's tiny sample's MosMed part (tests/conftest.py) and a first build of its
    first study, made once for the module."""
    base = tmp_path_factory.mktemp("mosmed-store")
    root, out = base / "mosmed", base / "build"
    shutil.copytree(catalog_sample / "mosmed", root)
    first = build_mosmed_study(_study(root), root, out, VOLUMES)
    assert first.stores_written >= 1 and len(first.stores) == first.stores_written
    return root, out, first


@pytest.fixture
def built(first_build, tmp_path: Path):
    """A copy of the first build and its sources for one test to change (copying is cheaper
    than converting again; the copies' digest caches no longer match, so files are rehashed)."""
    base_root, base_out, first = first_build
    root, out = tmp_path / "mosmed", tmp_path / "build"
    shutil.copytree(base_root, root)
    shutil.copytree(base_out, out)
    return root, out, first


def _study(root: Path) -> MosmedStudy:
    return discover_mosmed(root)[0]  # a folder of DICOM files with v1 and v2 annotations


def _stores(result) -> list[str]:
    return sorted(r["store_path"] for r in result.rows["series"] if r["store_path"])


def _move_first_keypoint(root: Path) -> None:
    """The v2 annotation file changed: the first point of its first vertebra moved 1 px."""
    (path,) = (p for p in _study(root).annotations if p.parent.name == "annotation_v2")
    data = json.loads(path.read_text())
    first_expert = next(iter(data["Annotation"].values()))
    first_expert[0]["segments"][0][0][0] += 1.0
    path.write_text(json.dumps(data, indent=2))


def test_an_annotation_change_reuses_every_series_store(built, tmp_path: Path) -> None:
    root, out, first = built
    written = {s: (out / s / "zarr.json").stat().st_mtime_ns for s in _stores(first)}
    _move_first_keypoint(root)
    again = build_mosmed_study(_study(root), root, out, VOLUMES)
    assert again.fingerprint != first.fingerprint  # the study was rebuilt ...
    assert again.stores_written == 0  # ... none of its series converted again
    assert _stores(again) == _stores(first)
    assert {s: (out / s / "zarr.json").stat().st_mtime_ns for s in _stores(again)} == written
    # Rows from the reused stores and statistics equal those of a build from scratch.
    fresh = build_mosmed_study(_study(root), root, tmp_path / "fresh", VOLUMES)
    assert fresh.stores_written == first.stores_written
    assert again.rows == fresh.rows and again.quarantine == fresh.quarantine
    assert again.stores == fresh.stores
    # The moved keypoint's row changed.
    assert again.rows["mosmed_vertebrae"] != first.rows["mosmed_vertebrae"]


def _change_one_dicom_file(root: Path, first) -> str:
    """One pixel of one slice of the first converted series changed; returns its UID."""
    row = next(r for r in first.rows["series"] if r["store_path"])
    for path in sorted((root / "dicom" / _study(root).folder).rglob("*")):
        if not path.is_file():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(path)
        if ds.SeriesInstanceUID == row["series_uid"]:
            ds.PixelData = bytes([ds.PixelData[0] ^ 1]) + ds.PixelData[1:]
            ds.save_as(path)
            return row["series_uid"]
    raise AssertionError("no file of the converted series found")


@pytest.mark.parametrize("change", ["dicom", "volumes", "store code"])
def test_a_changed_store_input_converts_the_series_again(
    built, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, out, first = built
    volumes = VOLUMES
    if change == "dicom":
        changed = {_change_one_dicom_file(root, first)}
    else:
        changed = {r["series_uid"] for r in first.rows["series"] if r["store_path"]}
        if change == "volumes":
            volumes = replace(VOLUMES, level=3)
        else:  # the store-writing code edited: its closure's code identity differs
            real = store_module.store_code_identity()
            monkeypatch.setattr(store_module, "store_code_identity", lambda: real + "-edited")
    _move_first_keypoint(root)  # with the annotation changed too, as a reuse would be
    again = build_mosmed_study(_study(root), root, out, volumes)
    assert again.stores_written == len(changed)
    old = {r["series_uid"]: r["store_path"] for r in first.rows["series"] if r["store_path"]}
    new = {r["series_uid"]: r["store_path"] for r in again.rows["series"] if r["store_path"]}
    assert {uid for uid in old if new[uid] != old[uid]} == changed
    assert all((out / path).is_dir() for path in old.values())  # never written over
