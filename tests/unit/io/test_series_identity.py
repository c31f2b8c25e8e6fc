"""Series without UIDs: a de-identified copy of a real CT series (dcm_qa_ct's Philips series,
UIDs blanked here with pydicom) is grouped, named and converted like the original."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from verse_etl.io.dicom import scan_files, walk_files
from verse_etl.io.series_identity import DERIVED_UID_ROOT
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import VolumeParams
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.stores.volumes import open_array

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
PHILIPS = SHARED / "corpora" / "dcm_qa_ct" / "In" / "Philips_S21570_S2010"
VOLUMES = VolumeParams(chunks=(64, 64, 32), shard_chunks=(8, 8, 1))
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _images() -> list[Path]:
    files = sorted(p for p in PHILIPS.iterdir() if p.name.startswith("I"))
    if len(files) != 28:
        pytest.fail(f"{PHILIPS}: expected the 28 real Philips slices, got {len(files)}")
    return files


def _deidentify(target: Path, how: str, names: str = "{i:03d}") -> None:
    """Copy the real series with its UIDs blanked ('' ) or deleted, files renamed."""
    target.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i, path in enumerate(_images()):
            ds = pydicom.dcmread(path)
            for keyword in UIDS:
                if how == "empty":
                    setattr(ds, keyword, "")
                else:
                    delattr(ds, keyword)
            ds.file_meta.MediaStorageSOPInstanceUID = ""
            ds.save_as(target / names.format(i=i))


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mosmed")
    dicom = root / "dicom"
    (dicom / "ORIGINAL").mkdir(parents=True)
    for path in _images():
        (dicom / "ORIGINAL" / path.name).write_bytes(path.read_bytes())
    _deidentify(dicom / "ANON" / "series", "empty")
    # The annotation still names the UID the files had before de-identification.
    (root / "annotation").mkdir()
    points = [
        [200.0 + r, 256.0, k] for r, k in ((0, 10), (0, 14), (8, 10), (8, 14), (16, 10), (16, 14))
    ]
    (root / "annotation" / "ANON.json").write_text(
        json.dumps(
            {"Folder": "ANON", "SeriesInstanceUID": "1.2.3.4.", "Annotation": {"expert1": [points]}}
        )
    )
    return root


def test_uidless_images_form_one_series_with_a_stable_derived_uid(
    studies: Path, tmp_path: Path
) -> None:
    scan = scan_files(walk_files(studies / "dicom" / "ANON"), folder="ANON")
    assert not scan.errors and not scan.skipped
    ((uid, headers),) = scan.series.items()
    assert uid.startswith(DERIVED_UID_ROOT) and len(uid) <= 64 and len(headers) == 28
    assert all(h.uid_derived and h.series_uid == uid for h in headers)
    # Same content -> same identifier, whatever the file names, and with the tags deleted
    # rather than blanked; another study folder would get another one.
    _deidentify(tmp_path / "again", "delete", names="IMG{i:05d}.dcm")
    same = scan_files(sorted((tmp_path / "again").iterdir()), folder="ANON")
    assert list(same.series) == [uid]
    other = scan_files(sorted((tmp_path / "again").iterdir()), folder="OTHER")
    assert list(other.series) != [uid]


def test_uidless_series_converts_like_the_original_and_is_reached_by_folder(
    studies: Path, tmp_path: Path
) -> None:
    found = {s.folder: s for s in discover_mosmed(studies)}
    anon = build_mosmed_study(found["ANON"], studies, tmp_path, VOLUMES)
    original = build_mosmed_study(found["ORIGINAL"], studies, tmp_path, VOLUMES)
    ((a,), (o,)) = anon.rows["series"], original.rows["series"]
    assert a["series_uid_derived"] and not o["series_uid_derived"]
    assert a["series_uid"].startswith(DERIVED_UID_ROOT) and a["study_uid"] == ""
    assert a["is_volume"] and a["annotated"]
    # Voxel for voxel the same volume on the same grid as the series with its UIDs.
    assert a["voxel_xxh3"] == o["voxel_xxh3"]
    np.testing.assert_array_equal(a["affine"], o["affine"])
    np.testing.assert_array_equal(
        open_array(tmp_path / a["store_path"])[...], open_array(tmp_path / o["store_path"])[...]
    )
    assert a["store_path"].startswith("volumes/mosmed/ANON/") and a["series_uid"] in a["store_path"]
    # The annotation (naming the UID the files lost) reaches the series by its folder.
    (row,) = anon.rows["mosmed_vertebrae"]
    assert (row["series_uid"], row["id_match"]) == (a["series_uid"], "folder")
    assert not [q for q in anon.quarantine if q.check in ("series_missing", "dicom_tags")]
