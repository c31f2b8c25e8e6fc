"""Issue #7's bad-input corpus: one build over good and bad sources mixed in their real layouts.

The fixture writes good data (VerSe scans and MosMed studies from :mod:`verse_etl_sample`, small
DICOM series from ``tests/dicom_factory.py``) into ``pristine/``, copies it to ``src/`` and damages
the copy case by case, in place, beside the good cases: on-disk VerSe files, the VerSe'20
release zip (read in place) with hostile members, MosMed study folders, annotation files and
study archives with hostile members. One build (``library_build.build_sources``: what
``verse-etl build`` runs, without Prefect) goes over all of it.

Then, from the table :data:`CORPUS`: every bad case has a quarantine record naming its file,
with its check and reason; every good case is built and its stores hold the source voxels; every
discovered case and archive member is built or quarantined; nothing is written outside the
build folder.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from tests.archive_factory import BOMB_BYTES, add_tar_member, add_zip_member, corrupt_zip_member
from tests.dicom_factory import write_series
from tests.e2e.hostile_kinds import (
    HOSTILE,
    HOSTILE_BUILT_SCANS,
    HOSTILE_REJECTED_SCANS,
    UID_KINDS,
    damage_mosmed,
    damage_verse,
)
from tests.e2e.library_build import build_sources
from tests.output_digests import build_digests, check_manifest
from verse_etl.dataset import Dataset
from verse_etl.errors import BuildFailed
from verse_etl.params import (
    BuildParams,
    CheckParams,
    InputLimits,
    MosmedParams,
    SourceParams,
    VolumeParams,
)
from verse_etl.read.catalog import query
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.sources.verse import discover_verse_sources
from verse_etl_sample import SampleManifest, write_sample
from verse_etl_sample.edge_cases import rewrite_dicom
from verse_etl_sample.verse_variants import (
    rewrite_centroids,
    rewrite_mask,
    rewrite_sform,
    zip_release,
)

V20_ZIP = "dataset-verse20training.zip"

CORPUS: list[tuple[str, str, str, str]] = [
    # (case, substring of quarantine.file, quarantine.check_name, substring of quarantine.reason)
    # VerSe NIfTI files on disk (dataset-verse19training/): the scan is rejected.
    ("nifti_truncated", "sub-verse008_ct.nii.gz", "read", "ended before the end-of-stream"),
    ("nifti_corrupt", "sub-verse015_ct.nii.gz", "read", "cannot decompress the voxel data"),
    ("nifti_nan_affine", "sub-verse022_ct.nii.gz", "affine", "affine is not finite"),
    ("nifti_singular_affine", "sub-verse029_ct.nii.gz", "affine", "or is singular"),
    ("mask_other_shape", "sub-verse036_seg-vert_msk.nii.gz", "image_mask_geometry", "shape"),
    ("mask_other_affine", "sub-verse043_seg-vert_msk.nii.gz", "image_mask_geometry", "1.5 mm"),
    # VerSe centroid files inside the release zip: the scan builds, the file or entry is flagged.
    ("centroids_malformed", "sub-gl003_dir-ax_seg-subreg_ctd.json", "centroid_json", "not valid"),
    ("centroids_wrong_shape", "sub-verse506_seg-subreg_ctd.json", "centroid_json", "entry 1"),
    ("centroids_nan", "sub-gl016_dir-ax_seg-subreg_ctd.json", "centroid_nan", "holds NaN"),
    ("centroids_label_outside_map", "sub-gl047_dir-ax_seg-subreg_ctd.json", "isin", "got 99"),
    (
        "centroids_outside_volume",
        "sub-gl090_dir-ax_seg-subreg_ctd.json",
        "centroid_outside_volume",
        "outside the image",
    ),
    # Members of the VerSe'20 release zip.
    ("zip_member_corrupt", "sub-gl108_dir-ax_ct.nii.gz", "read", "CRC"),
    ("zip_dotdot_member", f"{V20_ZIP}!/../", "archive_member", "unsafe name"),
    ("zip_absolute_member", f"{V20_ZIP}!//", "archive_member", "unsafe name"),
    ("zip_symlink_member", "sub-gl903_dir-ax_ct.nii.gz", "archive_member", "symbolic link"),
    ("zip_bomb_member", "sub-gl904_dir-ax_ct.nii.gz", "archive_bomb", "expands to"),
    # MosMed DICOM studies (dicom/<case>/...).
    ("dicom_missing_slice", "dicom/dicom_missing_slice", "series_missing_slices", "missing"),
    (
        "dicom_duplicate_positions",
        "dicom/dicom_duplicate_positions",
        "series_not_a_volume",
        "position",
    ),
    (
        "dicom_mixed_orientations",
        "dicom/dicom_mixed_orientations",
        "series_mixed_orientation",
        "orientation",
    ),
    ("dicom_not_dicom_file", "dicom_not_dicom_file/README.txt", "not_dicom_image", "not a DICOM"),
    (
        "dicom_no_instance_number",
        "annotation/dicom_no_instance_number.json",
        "instance_order",
        "InstanceNumber",
    ),
    ("dicom_no_pixel_data", "dicom/dicom_no_pixel_data/IM", "dicom_pixels", "has no pixel data"),
    # MosMed annotation files.
    (
        "annotation_missing_keys",
        "annotation_v2/annotations_bad.json",
        "annotation_keys",
        "['SeriesInstanceUID']",
    ),
    (
        "annotation_wrong_point_count",
        "annotation/annotations_bad.json",
        "annotation_points",
        "expected 6 points of 3 numbers, got 5 item(s)",
    ),
    # MosMed study archives (dicom/<case>.tar.gz).
    ("tar_dotdot_member", "tar_hostile.tar.gz!/../", "archive_member", "unsafe name"),
    ("tar_absolute_member", "tar_hostile.tar.gz!//", "archive_member", "unsafe name"),
    ("tar_symlink_member", "tar_hostile.tar.gz!/tar_hostile/link", "archive_member", "a link"),
    ("tar_bomb", "dicom/tar_bomb.tar.gz", "archive_bomb", "expands to more than 100 times"),
    # Files MosMed discovery cannot place, and a study with a file that cannot be read.
    ("study_packed_as_zip", "dicom/study_packed.zip", "study_unplaced", "not a study"),
    ("annotation_stray_file", "annotation/notes.txt", "annotation_unplaced", "not an annotation"),
    ("annotation_unreadable", "annotation/unreadable_study.json", "read", "cannot read"),
    ("dicom_broken_link", "dicom_not_dicom_file/IM-gone", "not_regular_file", "broken"),
]
"""Every bad case of the corpus and the quarantine record it must give."""

REJECTED_SCANS = ("verse008", "verse015", "verse022", "verse029", "verse036", "verse043", "gl108")
"""VerSe scans that must not be built (no row, no store): their CT or mask is unusable."""

BUILT_SCANS = (
    ("verse201", "good"),
    ("verse253", "good"),
    ("gl144", "good, in the zip"),
    ("gl195", "good, in the zip"),
    ("gl003", "centroids_malformed"),
    ("verse506", "centroids_wrong_shape"),
    ("gl016", "centroids_nan"),
    ("gl047", "centroids_label_outside_map"),
    ("gl090", "centroids_outside_volume"),
)
"""VerSe scans that must be built (a flagged centroid file leaves CT and mask usable)."""

NOT_CONVERTED = (
    "dicom_missing_slice",
    "dicom_duplicate_positions",
    "dicom_mixed_orientations",
    "dicom_no_pixel_data",
    "tar_bomb",
)
"""MosMed studies whose only series must not be converted."""

BUILT_STUDIES = (
    "mosmed_good",
    "dicom_no_instance_number",
    "annotations_bad",
    "dicom_not_dicom_file",
    "tar_hostile",
)
"""MosMed studies whose every series must be converted."""

VOLUMES = VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2), pyramid_levels=0)
CHECKS = CheckParams(
    modes={"voxel_constant": "raise"}, limits=InputLimits(max_json_bytes=256 << 10)
)
"""JSON files above 256 KiB are refused (real ones are a few KiB; the hostile one is 300 KiB);
a constant CT fails the build (after everything is written), every other check only warns."""

KINDS = CORPUS + HOSTILE
"""Issue #7's corpus and issue #13's hostile inputs: one build over all of them."""


@dataclass(frozen=True)
class Corpus:
    """The corpus on disk and its build."""

    root: Path  # pristine/, src/, out/, unpack/
    manifest: SampleManifest  # of the sample written into pristine/
    out: Path
    quarantine: pd.DataFrame
    outside_before: dict[str, str]  # sha256 of every file outside out/, before the build
    failure: str  # how the build failed: one check is set to raise


def _hashes(root: Path, skip: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and skip not in p.parents
    }


def _rename_study(mosmed: Path, folder: str, name: str) -> None:
    """Give a sample study (folder and annotation files) the name of its case."""
    (mosmed / "dicom" / folder).rename(mosmed / "dicom" / name)
    for release in ("annotation", "annotation_v2"):
        path = mosmed / release / f"{folder}.json"
        text = path.read_text(encoding="utf-8").replace(folder, name, 1)
        (mosmed / release / f"{name}.json").write_text(text, encoding="utf-8")
        path.unlink()


def _series_files(folder: Path, uid: str) -> list[Path]:
    """The DICOM files of one series below ``folder``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [
            p
            for p in sorted(folder.rglob("*"))
            if p.is_file()
            and str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == uid
        ]


def _write_pristine(root: Path) -> SampleManifest:
    manifest = write_sample(root, seed=7, verse_cases=16, mosmed_studies=3, size="tiny")
    mosmed = root / "mosmed"
    for study, name in zip(
        manifest.mosmed, ("mosmed_good", "dicom_no_instance_number", "annotations_bad"), strict=True
    ):
        _rename_study(mosmed, study.folder, name)
    rng = np.random.default_rng(7)
    for name in (*NOT_CONVERTED, "dicom_not_dicom_file", "tar_hostile"):
        volume = rng.integers(-1024, 2000, size=(8, 10, 6)).astype(np.int16)
        write_series(mosmed / "dicom" / name, volume)
    return manifest


def _damage_verse(src: Path, pristine: Path) -> None:
    def ct(scan: str) -> Path:
        return src / "dataset-verse19training" / "rawdata" / f"sub-{scan}" / f"sub-{scan}_ct.nii.gz"

    def mask(scan: str) -> Path:
        folder = src / "dataset-verse19training" / "derivatives" / f"sub-{scan}"
        return folder / f"sub-{scan}_seg-vert_msk.nii.gz"

    def centroids(scan: str) -> Path:
        entities = "" if scan.startswith("verse") else "_dir-ax"
        folder = src / "dataset-01training" / "derivatives" / f"sub-{scan}"
        return folder / f"sub-{scan}{entities}_seg-subreg_ctd.json"

    raw = ct("verse008").read_bytes()
    ct("verse008").write_bytes(raw[: len(raw) // 2])  # a download cut off half way
    corrupt = bytearray(ct("verse015").read_bytes())
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = bytes(64)
    ct("verse015").write_bytes(bytes(corrupt))
    for scan, column in (("verse022", float("nan")), ("verse029", 0.0)):
        affine = nib.load(ct(scan)).affine.copy()
        affine[:3, 2] = column
        rewrite_sform(ct(scan), affine)
    rewrite_mask(mask("verse036"), lambda x: x[:, :, :-1])
    shifted = nib.load(mask("verse043")).affine.copy()
    shifted[0, 3] += 1.5
    rewrite_mask(mask("verse043"), lambda x: x, affine=shifted)

    centroids("gl003").write_text("{not json")
    rewrite_centroids(centroids("verse506"), lambda e: [{"label": 20, "X": 1.0}])
    rewrite_centroids(centroids("gl016"), lambda e: [{**e[0], "X": float("nan")}, *e[1:]])
    rewrite_centroids(centroids("gl047"), lambda e: [*e, {**e[0], "label": 99}])
    rewrite_centroids(centroids("gl090"), lambda e: [{**e[0], "X": -40.0}, *e[1:]])
    archive = zip_release(src, "dataset-01training")

    def zipped_ct(scan: str) -> str:
        return f"dataset-01training/rawdata/sub-{scan}/sub-{scan}_dir-ax_ct.nii.gz"

    corrupt_zip_member(archive, zipped_ct("gl108"))
    good_ct = (pristine / zipped_ct("gl144")).read_bytes()
    with zipfile.ZipFile(archive, "a") as z:
        add_zip_member(z, f"../{zipped_ct('gl901')}", good_ct)
        add_zip_member(z, f"/{zipped_ct('gl902')}", good_ct)
        add_zip_member(z, zipped_ct("gl903"), symlink_to="/etc/passwd")
        add_zip_member(z, zipped_ct("gl904"), bytes(BOMB_BYTES), deflate=True)


def _slices(folder: Path) -> list[Path]:
    """The files of a one-series folder, head to feet (ImagePositionPatient z descending)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        z = {p: float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in folder.rglob("*")}
    return sorted(z, key=lambda p: -z[p])


def _pack(dicom: Path, name: str, hostile: list[tuple[str, bytes, dict]]) -> None:
    """Replace ``dicom/<name>/`` by ``dicom/<name>.tar.gz`` (members ``<name>/<name>/<file>``)
    holding ``hostile`` members too: ``(name, data, TarInfo attributes)``."""
    folder = dicom / name
    # gzip's header holds a time unless told otherwise: mtime=0 keeps the corpus byte-stable.
    with (
        gzip.GzipFile(dicom / f"{name}.tar.gz", "wb", mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w") as tar,
    ):
        for path in sorted(folder.rglob("*")):
            add_tar_member(tar, f"{name}/{name}/{path.name}", path.read_bytes())
        for member, data, attrs in hostile:
            add_tar_member(tar, member, data, **attrs)
    shutil.rmtree(folder)


def _damage_mosmed(src: Path, manifest: SampleManifest, outside: Path) -> None:
    """Damage the MosMed copy; ``outside`` is where an absolute tar member would land."""
    dicom = src / "dicom"
    _slices(dicom / "dicom_missing_slice")[3].unlink()
    dup = _slices(dicom / "dicom_duplicate_positions")
    twin = pydicom.dcmread(dup[2]).ImagePositionPatient
    rewrite_dicom([dup[3]], lambda ds, _: setattr(ds, "ImagePositionPatient", twin))
    rewrite_dicom(
        _slices(dicom / "dicom_mixed_orientations")[3:],
        lambda ds, _: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0, -1]),
    )
    (dicom / "dicom_not_dicom_file" / "README.txt").write_text("exported by a PACS\n")
    (dicom / "dicom_not_dicom_file" / "IM-gone").symlink_to(outside / "deleted-slice")
    rewrite_dicom(
        [_slices(dicom / "dicom_no_pixel_data")[2]], lambda ds, _: delattr(ds, "PixelData")
    )
    rewrite_dicom(
        _series_files(dicom / "dicom_no_instance_number", manifest.mosmed[1].series_uid),
        lambda ds, _: delattr(ds, "InstanceNumber"),
    )
    v1 = src / "annotation" / "annotations_bad.json"
    data = json.loads(v1.read_text())
    first = next(iter(data["Annotation"].values()))
    first[0] = first[0][:5]
    v1.write_text(json.dumps(data))
    v2 = src / "annotation_v2" / "annotations_bad.json"
    data = json.loads(v2.read_text())
    del data["SeriesInstanceUID"]
    v2.write_text(json.dumps(data))
    link = {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}
    _pack(
        dicom,
        "tar_hostile",
        [
            ("../../escaped", b"evil", {}),
            (str(outside), b"evil", {}),
            ("tar_hostile/link", b"", link),
        ],
    )
    _pack(dicom, "tar_bomb", [("tar_bomb/tar_bomb/IM-zeros", bytes(BOMB_BYTES), {})])
    (dicom / "study_packed.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    (src / "annotation" / "notes.txt").write_text("reading protocol\n")
    (src / "annotation" / "unreadable_study.json").mkdir()  # a folder where a file should be


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    manifest = _write_pristine(root / "pristine")
    shutil.copytree(root / "pristine", root / "src")
    _damage_verse(root / "src" / "verse", root / "pristine" / "verse")
    _damage_mosmed(root / "src" / "mosmed", manifest, root / "absolute")
    damage_verse(root / "src" / "verse", root / "pristine" / "verse")
    damage_mosmed(root / "src" / "mosmed")
    out = root / "out"
    (root / "unpack").mkdir()
    before = _hashes(root, out)
    params = BuildParams(
        out=str(out),
        sources=SourceParams(
            verse=str(root / "src" / "verse"), mosmed=str(root / "src" / "mosmed")
        ),
        volumes=VOLUMES,
        mosmed=MosmedParams(unpack_dir=str(root / "unpack")),
        checks=CHECKS,
    )
    with pytest.raises(BuildFailed) as failed:
        build_sources(params)
    quarantine = query(out, "SELECT * FROM quarantine").to_pandas()
    return Corpus(root, manifest, out, quarantine, before, str(failed.value))


def _records(corpus: Corpus, file: str) -> pd.DataFrame:
    q = corpus.quarantine
    return q[q["file"].str.contains(file, regex=False)]


@pytest.mark.parametrize(("case", "file", "check", "reason"), KINDS, ids=[c[0] for c in KINDS])
def test_bad_case_is_quarantined_naming_file_and_reason(
    corpus: Corpus, case: str, file: str, check: str, reason: str
) -> None:
    records = _records(corpus, file)
    shown = corpus.quarantine[["file", "check_name", "reason"]].to_string()
    assert not records.empty, f"{case}: no quarantine record names {file!r}\n{shown}"
    mine = records[records["check_name"].str.contains(check, regex=False)]
    assert not mine.empty, f"{case}: {records[['check_name', 'reason']].to_dict('records')}"
    assert mine["reason"].str.contains(reason, regex=False).any(), mine["reason"].tolist()
    # The reason starts with the file it is about, as every message does, on one line.
    assert all(r.startswith(f"{f}:") for f, r in zip(mine["file"], mine["reason"], strict=True))
    assert not mine["reason"].str.contains("\n").any(), mine["reason"].tolist()


def _table(corpus: Corpus, sql: str) -> pd.DataFrame:
    return query(corpus.out, sql).to_pandas()


@pytest.mark.parametrize("scan_id", REJECTED_SCANS + HOSTILE_REJECTED_SCANS)
def test_rejected_scan_leaves_no_rows_and_no_store(corpus: Corpus, scan_id: str) -> None:
    assert _table(corpus, f"SELECT * FROM scans WHERE scan_id = '{scan_id}'").empty
    assert _table(corpus, f"SELECT * FROM vertebrae WHERE scan_id = '{scan_id}'").empty
    assert not list((corpus.out / "volumes" / "verse").glob(f"{scan_id}.*zarr*"))


@pytest.mark.parametrize(("scan_id", "case"), BUILT_SCANS, ids=[s for s, _ in BUILT_SCANS])
def test_scan_builds_with_the_source_voxels(corpus: Corpus, scan_id: str, case: str) -> None:
    truth = next(s for s in corpus.manifest.verse if s.scan_id == scan_id)
    built = Dataset(corpus.out).case(scan_id)
    ct = nib.load(corpus.root / "pristine" / truth.ct)
    source = built.frame.to_source(built.image[...])  # the store holds it the right way up
    np.testing.assert_array_equal(source, np.asanyarray(ct.dataobj))
    np.testing.assert_allclose(built.source_affine, ct.affine, atol=1e-6)  # type: ignore[arg-type]
    labels = np.asanyarray(nib.load(corpus.root / "pristine" / truth.mask).dataobj)
    stored = built.frame.to_source(built.mask[...])  # type: ignore[index]
    np.testing.assert_array_equal(stored, labels.astype(np.uint8))
    assert set(truth.labels) <= set(built.vertebrae["label"])


def _dicom_volumes(folder: Path) -> dict[str, np.ndarray]:
    """HU volumes of every series below ``folder``, slices along the normal (pydicom only)."""
    by_uid: dict[str, list[pydicom.Dataset]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            ds = pydicom.dcmread(path)
            by_uid.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        volumes = {}
        for uid, datasets in by_uid.items():
            iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
            normal = np.cross(iop[:3], iop[3:])
            datasets.sort(key=lambda d: float(np.dot(d.ImagePositionPatient, normal)))
            volumes[uid] = np.stack(
                [
                    d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
                    for d in datasets
                ],
                axis=-1,
            )
    return volumes


@pytest.mark.parametrize("study", BUILT_STUDIES)
def test_study_builds_with_the_source_voxels(corpus: Corpus, study: str) -> None:
    expected = _dicom_volumes(corpus.root / "pristine" / "mosmed" / "dicom" / study)
    series = _table(corpus, f"SELECT * FROM series WHERE folder = '{study}'")
    assert sorted(series["series_uid"]) == sorted(expected)
    dataset = Dataset(corpus.out)
    for uid, volume in expected.items():
        case = dataset.case(uid)
        np.testing.assert_array_equal(case.frame.to_source(case.image[...]), volume)
    if study == "mosmed_good":
        rows = _table(corpus, f"SELECT * FROM mosmed_vertebrae WHERE folder = '{study}'")
        assert set(rows["release"]) == {"v1", "v2"}


@pytest.mark.parametrize("study", NOT_CONVERTED)
def test_study_is_not_converted(corpus: Corpus, study: str) -> None:
    series = _table(corpus, f"SELECT * FROM series WHERE folder = '{study}'")
    assert not series["is_volume"].any() and series["store_path"].isna().all()
    assert not list((corpus.out / "volumes" / "mosmed").glob(f"{study}/*.zarr*"))


def test_every_discovered_case_is_built_or_quarantined(corpus: Corpus) -> None:
    src, q = corpus.root / "src", corpus.quarantine
    found = discover_verse_sources(src / "verse")
    built = set(_table(corpus, "SELECT scan_id FROM scans")["scan_id"])
    # Records of the scans table name rejected scans, and flags of built ones (sidecar, voxels).
    rejected = set(q.loc[q["table_name"] == "scans", "case_id"]) - built
    assert {s.scan_id for s in found.scans} == built | rejected
    discovery = q[q["case_id"] == "_discovery"]
    # 4 of issue #7; a FIFO, a broken link, a socket and a zip with a bad name of issue #13
    assert len(discovery[discovery["source"] == "verse"]) == len(found.problems) == 8
    # the zip, notes.txt, the folder; a FIFO among the annotations and one in dicom/
    assert len(discovery[discovery["source"] == "mosmed"]) == 5
    series = _table(corpus, "SELECT folder FROM series")
    for study in discover_mosmed(src / "mosmed"):
        assert study.folder in set(series["folder"]) | set(q["case_id"]), study.folder


def test_every_archive_member_is_read_or_refused(corpus: Corpus) -> None:
    src, q = corpus.root / "src", corpus.quarantine
    found = discover_verse_sources(src / "verse")
    used = {
        f.member
        for s in found.scans
        for f in (s.ct, s.mask, s.centroids, s.sidecar, s.snapshot)
        if f and f.member
    }
    refused = {f.split("!/", 1)[1] for f in q["file"] if f.startswith(f"{V20_ZIP}!/")}
    with zipfile.ZipFile(src / "verse" / V20_ZIP) as z:
        members = {i.filename for i in z.infolist() if not i.is_dir()}
    assert members == used | refused and not used & refused
    series = _table(corpus, "SELECT n_files FROM series WHERE folder = 'tar_hostile'")
    with tarfile.open(src / "mosmed" / "dicom" / "tar_hostile.tar.gz") as tar:
        n_members = len(tar.getmembers())
    refused_tar = q["file"].str.startswith("dicom/tar_hostile.tar.gz!/")
    assert n_members == series["n_files"].sum() + refused_tar.sum()


def test_every_dicom_file_is_in_a_series_or_quarantined(corpus: Corpus) -> None:
    dicom, q = corpus.root / "src" / "mosmed" / "dicom", corpus.quarantine
    series = _table(corpus, "SELECT folder, n_files FROM series")
    # Files whose header is refused (not an image, unusable tags, too large) are not in a series.
    not_images = q[
        q["check_name"].isin(["not_dicom_image", "dicom_tags", "dicom_header", "too_large"])
    ]
    copies = set(q.loc[q["check_name"] == "duplicate_series", "case_id"])
    for folder in (p for p in dicom.iterdir() if p.is_dir() and p.name not in copies):
        files = [p for p in folder.rglob("*") if p.is_file()]
        counted = series.loc[series["folder"] == folder.name, "n_files"].sum()
        recorded = not_images["file"].str.startswith(f"dicom/{folder.name}/").sum()
        assert len(files) == counted + recorded, folder.name


def test_nothing_is_written_outside_the_build_folder(corpus: Corpus) -> None:
    assert _hashes(corpus.root, corpus.out) == corpus.outside_before
    assert not any((corpus.root / "unpack").iterdir())
    assert not (corpus.root / "absolute").exists() and not (corpus.root / "escaped").exists()


# -- issue #13: the hostile kinds --------------------------------------------------------------

GOOD_SCANS = ("verse201", "verse253", "gl144", "gl195")
"""VerSe scans left undamaged in the corpus (verse401's two split scans on disk; two in the zip)."""
GOOD_SUBJECTS = ("sub-verse401", "sub-gl144", "sub-gl195")


def test_corpus_output_digests(corpus: Corpus) -> None:
    """Behaviour does not change under refactoring: every table (the quarantine's reasons and
    records above all) and store of the corpus build equals the committed manifest."""
    digests = build_digests(corpus.out, corpus.root)
    assert any(p.startswith("tables/quarantine/") for p in digests), "no quarantine compared"
    check_manifest("bad_input_corpus", digests)


@pytest.fixture(scope="module")
def clean(corpus: Corpus) -> Path:
    """A clean build of the corpus' good cases alone, from the pristine files."""
    good = corpus.root / "good"
    verse, mosmed = good / "verse", good / "mosmed"
    shutil.copytree(corpus.root / "pristine" / "verse", verse)
    for subject in sorted(verse.glob("*/*/sub-*")):
        if subject.name not in GOOD_SUBJECTS:
            shutil.rmtree(subject)
    zip_release(verse, "dataset-01training")
    for name in (
        "dicom/mosmed_good",
        "annotation/mosmed_good.json",
        "annotation_v2/mosmed_good.json",
    ):
        source, target = corpus.root / "pristine" / "mosmed" / name, mosmed / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    out = corpus.root / "clean-out"
    build_sources(
        BuildParams(
            out=str(out),
            sources=SourceParams(verse=str(verse), mosmed=str(mosmed)),
            volumes=VOLUMES,
            checks=CHECKS,
        )
    )
    return out


def _rows(out: Path, sql: str) -> list[dict]:
    return query(out, sql).to_pylist()


def _store_files(out: Path, store: str) -> dict[str, str]:
    return {
        p.relative_to(out / store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / store).rglob("*"))
        if p.is_file()
    }


def test_good_cases_are_byte_identical_to_a_clean_build_of_them_alone(
    corpus: Corpus, clean: Path
) -> None:
    """Hostile neighbours change nothing in a good case: rows, stores, byte for byte."""
    ids = ", ".join(f"'{s}'" for s in GOOD_SCANS)
    for table, key in (("scans", "scan_id"), ("vertebrae", "scan_id")):
        sql = f"SELECT * FROM {table} WHERE {key} IN ({ids}) ORDER BY ALL"
        assert _rows(corpus.out, sql) == _rows(clean, sql), table
    for table in ("series", "mosmed_vertebrae", "mosmed_consensus"):
        sql = f"SELECT * FROM {table} WHERE folder = 'mosmed_good' ORDER BY ALL"
        rows = _rows(clean, sql)
        assert rows and _rows(corpus.out, sql) == rows, table
    stores = [r["store_path"] for r in _rows(clean, "SELECT store_path FROM scans")]
    stores += [r["store_path"] for r in _rows(clean, "SELECT store_path FROM series")]
    assert len(stores) == len(GOOD_SCANS) + 2  # mosmed_good: the thin series and the decoy
    for store in stores:
        files = _store_files(clean, store)
        assert files and _store_files(corpus.out, store) == files, store


@pytest.mark.parametrize("scan_id", HOSTILE_BUILT_SCANS)
def test_a_flagged_hostile_scan_still_builds(corpus: Corpus, scan_id: str) -> None:
    (row,) = _rows(corpus.out, f"SELECT * FROM scans WHERE scan_id = '{scan_id}'")
    assert (corpus.out / row["store_path"] / "zarr.json").is_file()


def test_a_copied_study_leaves_the_original_whole(corpus: Corpus) -> None:
    assert not _rows(corpus.out, "SELECT * FROM series WHERE folder = 'mosmed_good_copy'")
    good = _rows(corpus.out, "SELECT * FROM mosmed_vertebrae WHERE folder = 'mosmed_good'")
    assert {r["release"] for r in good} == {"v1", "v2"}
    q = corpus.quarantine
    copies = q[q["check_name"] == "duplicate_series"]
    assert set(copies["case_id"]) == {"mosmed_good_copy"} and len(copies) == 2  # two series
    assert not q["check_name"].str.contains("unique").any(), "a copy knocked out the original"


def test_hostile_series_uids_get_stores_inside_the_build(corpus: Corpus) -> None:
    """UIDs like ../../x, /abs/x, 300 characters or differing only by case: each series is
    converted into a store of its own below volumes/mosmed/<Folder>/, nothing lands elsewhere."""
    stores, dataset = {}, Dataset(corpus.out)
    for folder, uid in UID_KINDS.items():
        (row,) = _rows(corpus.out, f"SELECT * FROM series WHERE folder = '{folder}'")
        assert row["series_uid"] == uid and row["is_volume"], row
        store = corpus.out / row["store_path"]
        assert ".." not in Path(row["store_path"]).parts, row["store_path"]
        assert store.parent.parent == corpus.out / "volumes" / "mosmed", row["store_path"]
        assert store.resolve().is_relative_to(corpus.out.resolve())
        assert store.is_dir() and len(store.name) < 255
        stores[uid] = store
        case = dataset.case(uid)
        assert case.frame.shape == (8, 10, 6) and case.image.shape == (6, 8, 10)  # S, P, L
    assert len(set(stores.values())) == len(UID_KINDS)
    assert not Path(UID_KINDS["h_uid_absolute"]).exists()
    assert not Path(UID_KINDS["h_uid_absolute"] + ".zarr").exists()
    assert not [p for p in corpus.root.parent.rglob("outside-the-build*")]


def test_only_the_check_set_to_raise_fails_the_build(corpus: Corpus) -> None:
    """Every record is written and the build goes on; the exit is decided by the checks' modes."""
    q = corpus.quarantine
    failing = q[q["severity"] == "raise"]
    assert set(failing["check_name"]) == {"voxel_constant"}
    assert sorted(failing["case_id"]) == ["h_slope_zero", "verse912"]
    assert f"{len(failing)} quarantined record(s) failed checks set to 'raise'" in corpus.failure
    assert "({'voxel_constant': 2})" in corpus.failure  # only the check that fails the build
    assert len(q) > 70  # the other records only warn


def test_a_scan_whose_header_gives_an_absurd_spacing_has_no_row(corpus: Corpus) -> None:
    # Its row fails the contract (spacing over MAX_VOXEL_SPACING_MM) and is quarantined.
    assert _table(corpus, "SELECT * FROM scans WHERE scan_id = 'verse919'").empty
