"""Each kind of store built from the sample sources: voxels of every level, NGFF metadata,
read-back verification and reruns that convert nothing."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import xxhash
import zarr
from ngff_zarr import from_ngff_zarr
from ngff_zarr.validate import validate

from verse_etl.io.dicom import walk_files
from verse_etl.levels import VERSE_LEVELS
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import VolumeParams
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.sources.verse import discover_verse
from verse_etl.stores.volumes import LABELS_PATH, open_array
from verse_etl.verse.case import build_verse_scan

PARAMS = VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory):
    from verse_etl_sample import write_sample

    out = tmp_path_factory.mktemp("sample")
    return out, write_sample(out, seed=7, verse_cases=4, mosmed_studies=1, size="tiny")


def _upright(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The source volume turned to superior, posterior, left by nibabel (the store frame)."""
    turn = nib.orientations.ornt_transform(
        nib.io_orientation(affine), nib.orientations.axcodes2ornt(("S", "P", "L"))
    )
    return nib.orientations.apply_orientation(volume, turn)


def _levels(store: Path, group: str, source: np.ndarray, affine: np.ndarray) -> None:
    """Every pyramid level holds every 2**l-th voxel of the source turned the right way up;
    NGFF readers open the group."""
    multiscales = from_ngff_zarr(store / group if group else store, validate=True)
    assert len(multiscales.images) == PARAMS.pyramid_levels + 1
    upright = _upright(source, affine)
    for level, image in enumerate(multiscales.images):
        step = 2**level
        expected = upright[::step, ::step, ::step]
        np.testing.assert_array_equal(
            open_array(store, f"{group}/{level}".lstrip("/"))[...], expected
        )
        np.testing.assert_array_equal(np.asarray(image.data), expected)


def _f_xxh3(volume: np.ndarray) -> str:
    return xxhash.xxh3_128_hexdigest(np.asfortranarray(volume).reshape(-1, order="F").tobytes())


def test_verse_stores_keep_ct_dtype_labels_and_geometry(sample, tmp_path: Path) -> None:
    src, manifest = sample
    root = src / "verse"
    scans = {s.scan_id: s for s in discover_verse(root)}
    assert {s.mask_dtype for s in manifest.verse} == {"uint8", "float64"}  # both mask kinds
    for expected in manifest.verse:
        result = build_verse_scan(scans[expected.scan_id], root, tmp_path, PARAMS)
        assert not result.quarantine, result.quarantine
        row = result.rows["scans"][0]
        store = tmp_path / row["store_path"]
        ct = nib.load(str(src / expected.ct))
        mask = nib.load(str(src / expected.mask))
        ct_voxels = np.asanyarray(ct.dataobj)
        labels = np.asanyarray(mask.dataobj).astype(np.uint8)
        assert open_array(store).dtype == np.int16
        assert open_array(store, LABELS_PATH).dtype == np.uint8
        _levels(store, "", ct_voxels, ct.affine)
        _levels(store, "labels/vertebrae", labels, ct.affine)
        assert row["store_verified"] is True
        assert row["ct_voxel_xxh3"] == _f_xxh3(ct_voxels)
        assert row["mask_voxel_xxh3"] == _f_xxh3(labels)

        group = zarr.open_group(store, mode="r")
        validate(dict(group.attrs), version="0.5", model="image", strict=True)
        attributes = group.attrs["verse_etl"]
        np.testing.assert_array_equal(attributes["source_affine"], ct.affine)
        assert attributes["source_orientation"] == "".join(expected.orientation)
        assert attributes["orientation"] == "SPL"  # the store frame
        np.testing.assert_allclose(attributes["affine"], np.reshape(row["store_affine"], (4, 4)))
        np.testing.assert_allclose(
            attributes["affine"],
            ct.affine
            @ nib.orientations.inv_ornt_aff(
                nib.orientations.ornt_transform(
                    nib.io_orientation(ct.affine), nib.orientations.axcodes2ornt(("S", "P", "L"))
                ),
                ct.shape,
            ),
        )
        datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
        np.testing.assert_allclose(
            datasets[0]["coordinateTransformations"][0]["scale"],
            nib.affines.voxel_sizes(np.asarray(attributes["affine"])),
            rtol=1e-5,
        )
        label_attrs = dict(group["labels/vertebrae"].attrs)
        validate(label_attrs, version="0.5", model="label", strict=True)
        names = {
            p["label-value"]: p["level"] for p in label_attrs["ome"]["image-label"]["properties"]
        }
        assert all(names[label] == VERSE_LEVELS[label] for label in expected.labels)


def test_mosmed_stores_hold_sorted_hu_slices(sample, tmp_path: Path) -> None:
    src, manifest = sample
    root = src / "mosmed"
    (study,) = discover_mosmed(root)
    (expected,) = manifest.mosmed
    result = build_mosmed_study(study, root, tmp_path, PARAMS)
    assert not result.quarantine, result.quarantine
    assert result.stores_written == 2
    rows = {r["series_uid"]: r for r in result.rows["series"]}
    for uid, files in (
        (expected.series_uid, expected.files),
        (expected.decoy_series_uid, expected.decoy_files),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            datasets = [pydicom.dcmread(src / f) for f in files]
        datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))  # axial IOP
        hu = np.stack(
            [
                d.pixel_array.astype(np.int32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                for d in datasets
            ],
            axis=-1,
        ).astype(np.int16)
        store = tmp_path / rows[uid]["store_path"]
        assert open_array(store).dtype == np.int16
        affine = np.reshape(rows[uid]["affine"], (4, 4))
        _levels(store, "", hu, affine)
        assert rows[uid]["voxel_xxh3"] == _f_xxh3(hu)
        group = zarr.open_group(store, mode="r")
        np.testing.assert_allclose(group.attrs["verse_etl"]["source_affine"], affine)
        np.testing.assert_allclose(
            group.attrs["verse_etl"]["affine"], np.reshape(rows[uid]["store_affine"], (4, 4))
        )
        assert group.attrs["verse_etl"]["orientation"] == "SPL"
        assert "labels" not in group


def _files(out: Path) -> dict[str, tuple[int, int, int]]:
    """Every file of every store with its inode, modification time and size."""
    return {
        p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(out.rglob("*.zarr/**/*"))
        if p.is_file()
    }


def test_unchanged_rerun_converts_nothing(sample, tmp_path: Path) -> None:
    src, _ = sample
    verse = discover_verse(src / "verse")[:2]
    (study,) = discover_mosmed(src / "mosmed")

    def build(params: VolumeParams) -> int:
        written = sum(
            build_verse_scan(s, src / "verse", tmp_path, params).stores_written for s in verse
        )
        return written + build_mosmed_study(study, src / "mosmed", tmp_path, params).stores_written

    assert build(PARAMS) == 4
    before = _files(tmp_path)
    assert any("/c/" in name for name in before)  # shard files are among them
    assert build(PARAMS) == 0
    assert _files(tmp_path) == before  # not one store file rewritten, not even touched
    # Each case keeps the digest of every source file by its stat: a rerun reads none of them
    # (verse_etl.cases.stat_cache; what reuse sees and does not is tests/unit/cases/test_stat_cache.py).
    kept = {
        key: entry[5]
        for path in (tmp_path / "digests").rglob("*.json")
        for key, entry in json.loads(path.read_text())["entries"].items()
    }
    sources = [f.path for s in verse for f in s.files]
    sources += [*walk_files(study.dicom_dir), *study.annotations]
    assert kept == {str(p.absolute()): hashlib.sha256(p.read_bytes()).hexdigest() for p in sources}

    # A changed codec setting is part of the key: every store is rebuilt, beside the one the
    # published tables point at (named after the new key), which is left as it was.
    assert build(PARAMS.__class__(**{**PARAMS.__dict__, "level": PARAMS.level + 1})) == 4
    after = _files(tmp_path)
    assert {name: after[name] for name in before} == before
    assert len(after) == 2 * len(before)
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
