"""A VerSe scan's store is reused by a rebuild of the case exactly when its own inputs (the CT and
mask files, the volume parameters, the store code) are unchanged (verse_etl/verse/store.py)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from verse_etl.params import CheckParams, VolumeParams
from verse_etl.sources.verse import VerseScan, discover_verse_sources
from verse_etl.verse import store as store_module
from verse_etl.verse.case import build_verse_scan
from verse_etl_sample.verse_variants import rewrite_centroids

VOLUMES = VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2), threads=1)


@pytest.fixture
def built(catalog_sample: Path, tmp_path: Path):
    """A copy of the session's tiny sample (tests/conftest.py) and a first build of one scan."""
    root = tmp_path / "verse"
    shutil.copytree(catalog_sample / "verse", root)
    out = tmp_path / "build"
    first = build_verse_scan(_scan(root), root, out, VOLUMES, CheckParams())
    assert first.stores_written == 1 and first.stores
    return root, out, first


def _scan(root: Path) -> VerseScan:
    return discover_verse_sources(root).scans[0]  # one scan with a mask and centroids


def _store(result) -> str:
    return result.rows["scans"][0]["store_path"]


def _move_first_centroid(root: Path) -> None:
    centroids = _scan(root).centroids
    assert centroids is not None
    path = centroids.path

    def move(entries: list[dict]) -> list[dict]:
        first = dict(entries[0])
        first["X"] = float(first["X"]) + 1.0
        return [first, *entries[1:]]

    rewrite_centroids(path, move)


def test_a_centroid_change_reuses_the_store_and_its_statistics(built, tmp_path: Path) -> None:
    root, out, first = built
    zarr_json = out / _store(first) / "zarr.json"
    written = zarr_json.stat().st_mtime_ns
    _move_first_centroid(root)
    again = build_verse_scan(_scan(root), root, out, VOLUMES, CheckParams())
    assert again.fingerprint != first.fingerprint  # the case was rebuilt ...
    assert again.stores_written == 0  # ... its store was not
    assert _store(again) == _store(first) and zarr_json.stat().st_mtime_ns == written
    # Rows made from the reused store and statistics equal those of a build from scratch.
    fresh = build_verse_scan(_scan(root), root, tmp_path / "fresh", VOLUMES, CheckParams())
    assert fresh.stores_written == 1
    assert again.rows == fresh.rows and again.quarantine == fresh.quarantine
    assert again.stores == fresh.stores
    # The moved centroid's row changed (the store's labels were read at the new position).
    assert again.rows["vertebrae"] != first.rows["vertebrae"]


def _change_ct(root: Path) -> None:
    path = _scan(root).ct.path
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).copy()
    data[0, 0, 0] += 1
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))


@pytest.mark.parametrize("change", ["ct", "volumes", "store code"])
def test_a_changed_store_input_writes_a_new_store(
    built, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, out, first = built
    volumes = VOLUMES
    if change == "ct":
        _change_ct(root)
    elif change == "volumes":
        volumes = replace(VOLUMES, level=3)
    else:  # the store-writing code edited: its closure's code identity differs
        real = store_module.store_code_identity()
        monkeypatch.setattr(store_module, "store_code_identity", lambda: real + "-edited")
    _move_first_centroid(root)  # with the centroids changed too, as a reuse would be
    again = build_verse_scan(_scan(root), root, out, volumes, CheckParams())
    assert again.stores_written == 1
    assert _store(again) != _store(first)
    assert (out / _store(first)).is_dir()  # the published store is never written over
