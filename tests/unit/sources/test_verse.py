"""Discovery of every VerSe layout: folders, release zips (with wrappers), MICCAI flat copies,
duplicates across releases, and files that cannot be placed (reported, never dropped)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from verse_etl.io.files import SourceFile
from verse_etl.io.nifti import iter_nifti_slabs, read_nifti_info
from verse_etl.sources.verse import discover_verse, discover_verse_sources
from verse_etl_sample import SampleManifest, write_sample
from verse_etl_sample.verse_variants import copy_scan, write_miccai_copy, zip_release


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleManifest]:
    out = tmp_path_factory.mktemp("sample")
    return out, write_sample(out, seed=1, verse_cases=5, mosmed_studies=0, size="tiny")


def _copy(sample: tuple[Path, SampleManifest], tmp_path: Path) -> Path:
    src, _ = sample
    shutil.copytree(src / "verse", tmp_path / "verse")
    return tmp_path / "verse"


def test_subject_layout_ids_release_split_and_entities(sample) -> None:
    src, manifest = sample
    found = discover_verse_sources(src / "verse")
    assert not found.problems and not found.duplicates
    by_id = {s.scan_id: s for s in found.scans}
    assert sorted(by_id) == sorted(s.scan_id for s in manifest.verse)
    for truth in manifest.verse:
        scan = by_id[truth.scan_id]
        assert (scan.patient_id, scan.release, scan.split) == (
            truth.patient_id,
            truth.release,
            "training",
        )
        assert scan.ct == SourceFile(src / truth.ct)
        assert scan.mask == SourceFile(src / truth.mask)
        assert scan.centroids == SourceFile(src / truth.centroids)
        assert scan.sidecar == SourceFile(src / truth.sidecar)
        assert scan.layout == "subject" and scan.centroid_format == "subject"
    # The split patient: two scans, one patient; the dir- entity where the file names have it.
    assert by_id["verse201"].patient_id == by_id["verse253"].patient_id == "verse401"
    assert by_id["gl003"].direction == "ax" and by_id["verse506"].direction is None
    assert [g.name for g in found.grade_tables] == ["ryai190138_appendixe1.xlsx"]


@pytest.mark.parametrize("wrapper", [None, "dataset-01training"])
def test_release_zip_is_read_in_place(sample, tmp_path: Path, wrapper: str | None) -> None:
    src, manifest = sample
    root = _copy(sample, tmp_path)
    archive = zip_release(root, "dataset-01training", wrapper=wrapper)
    assert (
        archive.name == "dataset-verse20training.zip" and not (root / "dataset-01training").exists()
    )
    found = discover_verse_sources(root)
    assert not found.problems
    zipped = [s for s in found.scans if s.ct.member is not None]
    assert sorted(s.scan_id for s in zipped) == sorted(manifest.scan_ids("verse20"))
    for scan in zipped:
        assert scan.release == "verse20" and scan.split == "training" and scan.ct.path == archive
        assert scan.ct.relative(root).startswith("dataset-verse20training.zip/")
        truth = next(t for t in manifest.verse if t.scan_id == scan.scan_id)
        # Header and voxels read from the member equal those of the file itself.
        member, on_disk = read_nifti_info(scan.mask), read_nifti_info(src / truth.mask)
        for field in ("shape", "dtype", "qform_code", "sform_code", "vox_offset", "orientation"):
            assert getattr(member, field) == getattr(on_disk, field), field
        np.testing.assert_array_equal(member.affine, on_disk.affine)
        got = np.concatenate([s.copy() for _, s in iter_nifti_slabs(member, 3)], axis=2)
        np.testing.assert_array_equal(got, np.asanyarray(nib.load(src / truth.mask).dataobj))
        assert scan.ct.sha256() == SourceFile(src / truth.ct).sha256()


def test_zip_without_release_folder_takes_release_from_its_name(sample, tmp_path: Path) -> None:
    root = _copy(sample, tmp_path)
    # An OSF-style zip rooted at rawdata/ and derivatives/: only the zip's name says the release.
    import zipfile

    folder = root / "dataset-verse19training"
    with zipfile.ZipFile(root / "dataset-verse19training.zip", "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    shutil.rmtree(folder)
    found = discover_verse_sources(root)
    verse19 = [s for s in found.scans if s.release == "verse19"]
    assert verse19 and all(s.split == "training" and s.ct.member for s in verse19)
    assert all(s.ct.member.startswith("rawdata/") for s in verse19)


def test_miccai_layouts_including_misnamed_files(sample, tmp_path: Path) -> None:
    src, manifest = sample
    root = tmp_path / "miccai"
    v19 = next(s for s in manifest.verse if s.scan_id == "verse201")
    gl = next(s for s in manifest.verse if s.scan_id == "gl003")
    split = next(s for s in manifest.verse if s.scan_id == "verse253")
    write_miccai_copy(src, v19, root / "verse2019" / "training_data", "verse19")
    files = write_miccai_copy(src, gl, root / "verse2020" / "01_test", "verse20", misnamed=True)
    write_miccai_copy(src, split, root / "verse2020" / "02_validation", "verse20")
    assert files["centroids"].name == "GL003_CT_ax-iso-ctd.json"
    found = discover_verse_sources(root)
    assert not found.problems, found.problems
    by_id = {s.scan_id: s for s in found.scans}
    assert set(by_id) == {"verse201", "gl003", "verse253"}
    a, b, c = by_id["verse201"], by_id["gl003"], by_id["verse253"]
    assert (a.release, a.layout, a.centroid_format, a.split) == (
        "verse19",
        "miccai",
        "miccai19",
        "training",
    )
    assert a.patient_id == "verse201"  # MICCAI'19 names carry the series id only
    assert (b.release, b.centroid_format, b.direction, b.split, b.patient_id) == (
        "verse20",
        "miccai20",
        "ax",
        "test",
        "gl003",
    )
    assert b.centroids is not None and b.centroids.name == "GL003_CT_ax-iso-ctd.json"
    assert (c.patient_id, c.scan_id, c.split) == ("verse401", "verse253", "validation")
    assert all(s.mask is not None for s in (a, b, c))


def test_scan_in_both_releases_is_kept_once_with_a_record(sample, tmp_path: Path) -> None:
    _src, manifest = sample
    root = _copy(sample, tmp_path)
    v19 = next(s for s in manifest.verse if s.scan_id == "verse008")
    copied = copy_scan(tmp_path, v19, "dataset-02validation")
    write_miccai_copy(tmp_path, v19, root / "miccai20", "verse20")
    found = discover_verse_sources(root)
    kept = next(s for s in found.scans if s.scan_id == "verse008")
    assert (kept.release, kept.layout) == ("verse19", "subject")
    assert len([s for s in found.scans if s.scan_id == "verse008"]) == 1
    dropped = sorted(str(d.ct) for d, k in found.duplicates if k.scan_id == "verse008")
    assert len(dropped) == 2 and str(copied) in dropped
    assert sorted(str(c) for c in kept.other_copies) == dropped
    # discover_verse lists every copy, kept one first.
    copies = [s for s in discover_verse(root) if s.scan_id == "verse008"]
    assert copies[0] == kept and len(copies) == 3


def test_unplaceable_files_are_reported(sample, tmp_path: Path) -> None:
    root = _copy(sample, tmp_path)
    # A mask whose CT is missing, a file with a drifted name, a release folder renamed away.
    der = next((root / "dataset-verse19training" / "derivatives").iterdir())
    lone = der / f"{der.name}_split-verse999_seg-vert_msk.nii.gz"
    shutil.copyfile(next(der.glob("*_seg-vert_msk.nii.gz")), lone)
    (der / f"{der.name}_seg-vert-msk.nii.gz").write_bytes(b"")
    shutil.move(root / "dataset-01training", root / "my-copy")
    (root / "broken.zip").write_bytes(b"not a zip")
    found = discover_verse_sources(root)
    checks = sorted({e.check for e in found.problems})
    assert checks == ["missing_ct", "read", "release_unknown", "unrecognised_file"]
    by_check = {e.check: e for e in found.problems}
    assert by_check["missing_ct"].path == str(lone)
    assert "dataset-verse19training" in str(by_check["release_unknown"])
    assert all(s.release == "verse19" for s in found.scans)
