"""The sample generator must write exactly what the real releases look like.

Format checks compare generated files with the real ones in ``../shared/fixtures`` (a VerSe'19
mask + centroid file, 20 MosMed v1 annotation files); content checks compare the files with
the generator's manifest (labels, fractures, UIDs) and with the phantom's ground truth.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import aff2axcodes

from tests.file_digests import file_digests
from verse_etl.errors import InputError, ParamsError
from verse_etl_sample import SampleManifest, write_annotation_studies, write_sample
from verse_etl_sample.mosmed import (
    SliceEncoder,
    _base_dataset,
    _pixel_data,
    _pixels,
    allow_invalid_uids,
    real_style_series_uid,
    study_plan,
    thin_and_decoy,
)
from verse_etl_sample.nifti import nifti_header_bytes, write_nifti_gz
from verse_etl_sample.phantom import (
    Trunk,
    build_phantom,
    sample_volume,
    vertebra_from_heights,
    vertebra_from_keypoints,
    world_to_voxel,
)
from verse_etl_sample.rle import encode_frame

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
REAL_VERSE = SHARED / "fixtures" / "verse" / "sub-verse004"
REAL_MASK = REAL_VERSE / "sub-verse004_seg-vert_msk.nii.gz"
REAL_CTD = REAL_VERSE / "sub-verse004_seg-subreg_ctd.json"
REAL_ANNOTATIONS = SHARED / "fixtures" / "mosmed" / "annotation"
REAL_ANNOTATIONS_V2 = SHARED / "fixtures" / "mosmed" / "annotation_v2"
BONE_HU = 150.0


@pytest.fixture(scope="module")
def real() -> Path:
    """The real fixtures; CI always has them, so their absence fails (never skips)."""
    if not REAL_MASK.is_file() or not REAL_ANNOTATIONS.is_dir():
        pytest.fail(f"{SHARED}: real fixtures not found; clone the project beside ../shared")
    return SHARED


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleManifest]:
    out = tmp_path_factory.mktemp("tiny")
    return out, write_sample(out, seed=0, verse_cases=5, mosmed_studies=3, size="tiny")


@pytest.fixture(scope="module")
def tiny_again(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleManifest]:
    out = tmp_path_factory.mktemp("tiny_again")
    return out, write_sample(out, seed=0, verse_cases=5, mosmed_studies=3, size="tiny")


@pytest.fixture(scope="module")
def replayed(
    real: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, SampleManifest]:
    """Annotation studies for two real studies (the first two by name): the first with its v1
    and v2 files, the second with its v2 file only."""
    src = tmp_path_factory.mktemp("annotations")
    (src / "v1").mkdir()
    (src / "v2").mkdir()
    first, second = sorted(REAL_ANNOTATIONS.glob("*.json"))[:2]
    shutil.copy(first, src / "v1" / first.name)
    for path in (first, second):
        shutil.copy(REAL_ANNOTATIONS_V2 / path.name, src / "v2" / path.name)
    out = tmp_path_factory.mktemp("replayed")
    return src, out, write_annotation_studies([src / "v1", src / "v2"], out, seed=0)


def _raw_header(path: Path) -> nib.Nifti1Header:
    with gzip.open(path, "rb") as f:
        return nib.Nifti1Header.from_fileobj(io.BytesIO(f.read(352)))


def _read_series(root: Path, folder: str) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """Headers of every DICOM file of a study folder, by SeriesInstanceUID, InstanceNumber order."""
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    with allow_invalid_uids():  # the real-style UIDs end in '.'
        for path in (root / "mosmed" / "dicom" / folder).rglob("*"):
            if path.is_file():
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                series[str(ds.SeriesInstanceUID)].append((path, ds))
    return {uid: sorted(v, key=lambda pd: int(pd[1].InstanceNumber)) for uid, v in series.items()}


class _Image:
    """``image[row, col, k]`` as the annotation authors' loader builds it, decoded lazily."""

    def __init__(self, slices: list[tuple[Path, pydicom.Dataset]]) -> None:
        self.paths = [p for p, _ in slices]
        self.cache: dict[int, np.ndarray] = {}

    def slice(self, k: int) -> np.ndarray:
        if k not in self.cache:
            with allow_invalid_uids():
                d = pydicom.dcmread(self.paths[k])
                self.cache[k] = d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
        return self.cache[k]

    def at(self, point: np.ndarray) -> float:
        row, col, k = (round(float(c)) for c in point)
        return float(self.slice(k)[row, col])


def _midpoints(vertebra: np.ndarray) -> np.ndarray:
    v = np.asarray(vertebra)
    return 0.5 * (v[0::2] + v[1::2])


def _at(volume: np.ndarray | _Image, point: np.ndarray) -> float:
    if isinstance(volume, _Image):
        return volume.at(point)
    return float(volume[tuple(round(float(c)) for c in point)])


# --------------------------------------------------------------------------------------------
# VerSe


def test_centroid_json_serialised_like_the_real_file(
    real: Path, tiny: tuple[Path, SampleManifest]
) -> None:
    out, manifest = tiny
    real_text = REAL_CTD.read_text()
    real_data = json.loads(real_text)
    for scan in manifest.verse:
        text = (out / scan.centroids).read_text()
        for t in (real_text, text):
            assert "\n" not in t  # single line, no trailing newline
            assert json.dumps(json.loads(t)) == t  # default separators
        data = json.loads(text)
        assert list(data[0]) == list(real_data[0]) == ["direction"]
        mask = nib.load(out / scan.mask)
        assert data[0]["direction"] == list(aff2axcodes(mask.affine))
        for entry in data[1:]:
            assert list(entry) == list(real_data[1]) == ["label", "X", "Y", "Z"]
            assert isinstance(entry["label"], int)
            for key in "XYZ":
                assert isinstance(entry[key], float)
                assert round(entry[key], 1) == entry[key]
                assert re.fullmatch(r"-?\d+\.\d", json.dumps(entry[key]))


def test_mask_header_conventions_equal_the_real_mask(
    real: Path, tiny: tuple[Path, SampleManifest]
) -> None:
    out, manifest = tiny
    real_raw = _raw_header(REAL_MASK)
    real_loaded = nib.load(REAL_MASK).header
    codes = set()
    for scan in manifest.verse:
        for path in (out / scan.mask, out / scan.ct):
            raw = _raw_header(path)
            for key in (
                "sizeof_hdr",
                "vox_offset",
                "qform_code",
                "sform_code",
                "xyzt_units",
                "scl_slope",
                "scl_inter",
                "magic",
                "dim_info",
                "slice_code",
                "descrip",
            ):
                assert raw[key] == real_raw[key], (path.name, key)
            loaded = nib.load(path).header
            assert np.isnan(loaded["scl_slope"]) and np.isnan(real_loaded["scl_slope"])
            assert len(loaded.extensions) == len(real_loaded.extensions) == 0
            with open(path, "rb") as f:
                gz = f.read(10)
            assert gz[:3] == b"\x1f\x8b\x08" and gz[4:8] == b"\0\0\0\0"  # gzip mtime 0
        mask, ct = nib.load(out / scan.mask), nib.load(out / scan.ct)
        codes.add(int(mask.header["datatype"]))
        assert mask.header.get_data_dtype() == np.dtype(scan.mask_dtype)
        assert ct.header.get_data_dtype() == np.int16
        assert mask.shape == ct.shape == scan.shape
        np.testing.assert_array_equal(mask.affine, ct.affine)
    assert codes == {2, 64}  # uint8 and float64 both occur, as in the real releases
    assert real_raw["datatype"] == 64


def test_verse19_is_pir_oblique_and_verse20_lps_zero_origin(
    tiny: tuple[Path, SampleManifest],
) -> None:
    out, manifest = tiny
    assert aff2axcodes(nib.load(REAL_MASK).affine) == ("P", "I", "R")
    for scan in manifest.verse:
        affine = nib.load(out / scan.ct).affine
        codes = aff2axcodes(affine)
        assert codes == scan.orientation
        directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
        tilt = np.degrees(np.arccos(np.clip(np.abs(directions).max(axis=0), -1, 1)))
        if scan.release == "verse19":
            assert codes == ("P", "I", "R")
            assert np.all(tilt > 0.5) and np.all(tilt < 10)  # oblique, a few degrees
            assert np.linalg.norm(affine[:3, 3]) > 100  # scanner-frame translation
        else:
            assert codes == ("L", "P", "S")
            np.testing.assert_array_equal(affine[:3, :3], np.diag(np.diag(affine[:3, :3])))
            np.testing.assert_array_equal(affine[:3, 3], 0)
            spacing = np.abs(np.diag(affine[:3, :3]))
            assert spacing[0] == spacing[1] != spacing[2]


def test_layout_and_sidecars(tiny: tuple[Path, SampleManifest]) -> None:
    out, manifest = tiny
    verse = out / "verse"
    expected = [
        "dataset-verse19training/rawdata/sub-verse401/sub-verse401_split-verse201_ct.nii.gz",
        "dataset-verse19training/rawdata/sub-verse401/sub-verse401_split-verse253_ct.json",
        "dataset-verse19training/derivatives/sub-verse401/sub-verse401_split-verse201_seg-vert_msk.nii.gz",
        "dataset-verse19training/derivatives/sub-verse401/sub-verse401_split-verse253_seg-subreg_ctd.json",
        "dataset-verse19training/derivatives/sub-verse401/sub-verse401_split-verse253_seg-vert_snp.png",
        "dataset-verse19training/rawdata/sub-verse008/sub-verse008_ct.nii.gz",
        "dataset-01training/rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz",
        "dataset-01training/derivatives/sub-gl003/sub-gl003_dir-ax_seg-vert_msk.nii.gz",
        "dataset-01training/rawdata/sub-verse506/sub-verse506_ct.nii.gz",
    ]
    for rel in expected:
        assert (verse / rel).is_file(), rel
    assert manifest.scan_ids("verse19") == ("verse201", "verse253", "verse008")
    assert manifest.scan_ids("verse20") == ("gl003", "verse506")
    # Five files per scan, plus the VerSe'19 grading spreadsheet beside the release folders.
    assert len([p for p in verse.rglob("*") if p.is_file()]) == 5 * len(manifest.verse) + 1
    assert manifest.fracture_grades == Path("verse/ryai190138_appendixe1.xlsx")
    for scan in manifest.verse:
        text = (out / scan.sidecar).read_text()
        assert json.dumps(json.loads(text), indent=4) == text
        sidecar = json.loads(text)
        assert list(sidecar) == ["dataset", "KVP", "Manufacturer", "ManufacturerModelName"]
        assert sidecar["dataset"] == "VERSE  - DOI 10.17605/OSF.IO/NQJYW"
        assert isinstance(sidecar["KVP"], str) and sidecar["KVP"].isdigit()
        png = (out / scan.snapshot).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # Edge cases the pipeline must handle: T13 (28), L6 (25), both mask dtypes.
    labels = {scan.scan_id: scan.labels for scan in manifest.verse}
    assert 28 in labels["gl003"] and 25 in labels["verse506"]


def test_centroids_sit_inside_their_labels(tiny: tuple[Path, SampleManifest]) -> None:
    out, manifest = tiny
    differs_from_com = 0
    for scan in manifest.verse:
        mask = np.asanyarray(nib.load(out / scan.mask).dataobj)
        ct = np.asanyarray(nib.load(out / scan.ct).dataobj)
        entries = json.loads((out / scan.centroids).read_text())[1:]
        present = set(np.unique(mask).astype(int).tolist()) - {0}
        assert {e["label"] for e in entries} == present == set(scan.labels)
        for e in entries:
            point = np.array([e["X"], e["Y"], e["Z"]])
            assert mask[tuple(np.rint(point).astype(int))] == e["label"]
            assert _at(ct, point) > BONE_HU
            com = np.argwhere(mask == e["label"]).mean(axis=0)
            differs_from_com += np.linalg.norm(com - point) > 1.0
    # Body centroids, not mask centres of mass (the arch pulls the COM backwards).
    assert differs_from_com > 0


def test_verse_fracture_lowers_anterior_height(tiny: tuple[Path, SampleManifest]) -> None:
    out, manifest = tiny
    scan = next(s for s in manifest.verse if s.scan_id == "verse253")
    assert (19, "wedge") in scan.fractures
    mask = np.asanyarray(nib.load(out / scan.mask).dataobj)
    affine = nib.load(out / scan.mask).affine
    sizes = {label: int((mask == label).sum()) for label in (18, 19, 20)}
    assert sizes[19] < sizes[18]  # the wedged T12 is smaller than the T11 above it
    assert aff2axcodes(affine) == ("P", "I", "R")


# --------------------------------------------------------------------------------------------
# MosMed


def test_annotation_json_serialised_like_the_real_files(
    real: Path, tiny: tuple[Path, SampleManifest]
) -> None:
    out, manifest = tiny
    real_files = sorted(REAL_ANNOTATIONS.glob("*.json"))
    assert len(real_files) >= 20
    generated = [out / study.annotation for study in manifest.mosmed]
    for path in real_files + generated:
        text = path.read_text()
        assert not text.endswith("\n")
        data = json.loads(text)
        assert json.dumps(data, indent=2) == text
        assert list(data) == ["Folder", "SeriesInstanceUID", "Annotation"]
        assert data["Folder"] == path.stem
        assert 2 <= len(data["Annotation"]) <= 3
        for key, vertebrae in data["Annotation"].items():
            assert re.fullmatch(r"expert[0-6]", key)
            centres = []
            for v in vertebrae:
                a = np.asarray(v)
                assert a.shape == (6, 3)
                assert all(isinstance(c, float) for p in v for c in p)
                assert np.all(a[:, 1] == np.round(a[:, 1])) and np.all(a[:, 1] == a[0, 1])
                assert np.all(a[0::2, 2] < a[1::2, 2])  # superior before inferior along k
                pairs = 0.5 * (a[0::2, 0] + a[1::2, 0])
                assert pairs[0] < pairs[1] < pairs[2]  # anterior < middle < posterior rows
                centres.append(a[:, 2].mean())
            assert centres == sorted(centres)  # cranial -> caudal


def test_keypoints_sit_on_bone_and_fractures_show(tiny: tuple[Path, SampleManifest]) -> None:
    out, manifest = tiny
    kinds = set()
    for study in manifest.mosmed:
        series = _read_series(out, study.folder)
        volume = _Image(series[study.series_uid])
        annotation = json.loads((out / study.annotation).read_text())["Annotation"]
        on_bone, total = 0, 0
        per_vertebra: dict[int, list[np.ndarray]] = defaultdict(list)
        for key, indices in study.experts:
            for v, index in zip(annotation[key], indices, strict=True):
                a = np.asarray(v)
                assert _at(volume, a.mean(axis=0)) > BONE_HU
                on_bone += sum(_at(volume, m) > BONE_HU for m in _midpoints(a))
                total += 3
                per_vertebra[index].append(a)
        assert on_bone >= 0.95 * total
        mm = np.array([study.pixel_spacing_mm, study.pixel_spacing_mm, study.slice_spacing_mm])
        heights = {
            i: np.mean([np.linalg.norm((a[1::2] - a[0::2]) * mm, axis=1) for a in vs], axis=0)
            for i, vs in per_vertebra.items()
        }
        for i, vertebra in enumerate(study.vertebrae):
            h_a, h_m, h_p = heights[i]
            kinds.add(vertebra.fracture)
            if vertebra.fracture == "normal":
                assert 1 - min(h_a, h_m, h_p) / max(h_a, h_m, h_p) < 0.2
            elif vertebra.fracture == "wedge":
                assert 1 - h_a / h_p > 0.25
            elif vertebra.fracture == "biconcave":
                assert 1 - h_m / h_p > 0.25
            elif vertebra.fracture == "crush":
                neighbours = [heights[j][2] for j in (i - 1, i + 1) if j in heights]
                assert 1 - h_p / np.mean(neighbours) > 0.2
    assert {"normal", "wedge", "crush", "biconcave"} <= kinds


def test_dicom_series_conventions(tiny: tuple[Path, SampleManifest]) -> None:
    out, manifest = tiny
    signed = [s.signed for s in manifest.mosmed]
    assert signed == [False, True, False]
    for study in manifest.mosmed:
        assert study.series_uid.endswith(".") and len(study.series_uid) == 63
        assert study.series_uid.startswith("1.2.643.5.1.13.13.12.2.77.8252.")
        series = _read_series(out, study.folder)
        assert set(series) == {study.series_uid, study.decoy_series_uid}
        thin = [d for _, d in series[study.series_uid]]
        decoy = [d for _, d in series[study.decoy_series_uid]]
        assert len(thin) == study.n_slices and [int(d.InstanceNumber) for d in thin] == list(
            range(1, study.n_slices + 1)
        )
        z = np.array([float(d.ImagePositionPatient[2]) for d in thin])
        np.testing.assert_allclose(np.diff(z), -study.slice_spacing_mm, atol=1e-3)  # head -> feet
        assert float(decoy[0].SliceThickness) == 5.0 and len(decoy) < len(thin)
        z_decoy = np.array([float(d.ImagePositionPatient[2]) for d in decoy])
        np.testing.assert_allclose(np.diff(z_decoy), -5.0, atol=1e-3)
        assert {d.StudyInstanceUID for d in thin + decoy} == {study.study_uid}
        for d in (thin[0], decoy[-1]):
            assert (
                d.preamble == b"\0" * 128 and d.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
            )
            assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and d.Modality == "CT"
            assert [float(x) for x in d.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert str(d.PatientName) == "ANON^SAMPLE" and d.PatientID.startswith("ANON-")
            assert float(d.RescaleSlope) == 1.0
            assert int(d.PixelRepresentation) == int(study.signed)
            assert float(d.RescaleIntercept) == (0.0 if study.signed else -1024.0)
            for tag in (
                "Manufacturer",
                "ManufacturerModelName",
                "ConvolutionKernel",
                "KVP",
                "PixelSpacing",
                "FrameOfReferenceUID",
                "SOPInstanceUID",
            ):
                assert tag in d
        # No extensions, nested below the study folder, names unrelated to slice order.
        paths = [out / p for p in study.files + study.decoy_files]
        assert all(
            p.suffix == "" and len(p.relative_to(out / "mosmed" / "dicom").parts) == 4
            for p in paths
        )
        names = [p.name for p in (out / p for p in study.files)]
        assert names != sorted(names)
        assert len({p.parent for p in paths}) == 2


def test_sample_is_byte_identical_across_runs(
    tiny: tuple[Path, SampleManifest], tiny_again: tuple[Path, SampleManifest]
) -> None:
    (a, ma), (b, mb) = tiny, tiny_again
    assert file_digests(a) == file_digests(b)
    assert ma == mb
    assert sorted(file_digests(a)) == sorted(str(p) for p in ma.files)


def test_annotation_studies_match_real_files(
    real: Path, replayed: tuple[Path, Path, SampleManifest]
) -> None:
    """v1 and v2 files of one study make one study; a v2 file alone makes one too; the copies
    are byte-identical in their release's folder and every reader's points lie on bone."""
    src, out, manifest = replayed
    assert len(manifest.mosmed) == 2
    both, v2_only = manifest.mosmed
    assert both.annotation == Path("mosmed/annotation") / f"{both.folder}.json"
    assert both.annotation_v2 == Path("mosmed/annotation_v2") / f"{both.folder}.json"
    assert both.experts and both.v2_experts
    assert v2_only.annotation == v2_only.annotation_v2 and not v2_only.experts
    for study in manifest.mosmed:
        copies = [
            (
                p,
                src
                / p.parent.name.replace("annotation_v2", "v2").replace("annotation", "v1")
                / p.name,
            )
            for p in {study.annotation, study.annotation_v2}
            if p
        ]
        series = _read_series(out, study.folder)
        assert set(series) == {study.series_uid, study.decoy_series_uid}
        thin = [d for _, d in series[study.series_uid]]
        volume = _Image(series[study.series_uid])
        for copy_path, original in copies:
            assert (out / copy_path).read_bytes() == original.read_bytes()
            data = json.loads(original.read_text())
            assert study.series_uid == data["SeriesInstanceUID"]
            assert str(thin[0].SeriesInstanceUID) == data["SeriesInstanceUID"]  # trailing '.'
            for vertebrae in data["Annotation"].values():
                for v in vertebrae:
                    v = np.reshape(v["segments"], (6, 3)) if isinstance(v, dict) else v
                    assert len(thin) > np.max(np.asarray(v)[:, 2])
                    assert _at(volume, np.asarray(v).mean(axis=0)) > BONE_HU
                    assert all(_at(volume, m) > BONE_HU for m in _midpoints(v))
        assert thin[0].Rows == thin[0].Columns == 512
        assert thin[0].file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"  # RLE Lossless
        middle = volume.slice(len(thin) // 2)
        assert middle.min() == -1000 and middle.max() == 1000  # air and cortical bone
        # The phantom's vertebrae carry the v2 labels (Th7 -> T7).
        raw_v2 = json.loads((out / study.annotation_v2).read_text())["Annotation"]
        for key, indices in study.v2_experts:
            labels = [v["type"].replace("Th", "T") for v in raw_v2[key]]
            assert [study.vertebrae[i].level for i in indices] == labels
    # A v1 reading that v2 repeats exactly is the same phantom vertebra.
    raw_v1 = json.loads((out / both.annotation).read_text())["Annotation"]
    raw_v2 = json.loads((out / both.annotation_v2).read_text())["Annotation"]
    v1_index = {k: dict(both.experts)[k] for k in raw_v1}
    v2_index = {k: dict(both.v2_experts)[k] for k in raw_v2}
    shared = 0
    for k1, verts1 in raw_v1.items():
        for i, a in enumerate(verts1):
            for k2, verts2 in raw_v2.items():
                for j, b in enumerate(verts2):
                    if np.array_equal(np.reshape(b["segments"], (6, 3)), a):
                        assert v1_index[k1][i] == v2_index[k2][j]
                        shared += 1
    assert shared > 10


def test_annotation_files_of_one_study_must_agree(tmp_path: Path) -> None:
    first = sorted(REAL_ANNOTATIONS.glob("*.json"))[0]
    for release, folder in (("v1", REAL_ANNOTATIONS), ("v2", REAL_ANNOTATIONS_V2)):
        (tmp_path / release).mkdir()
        data = json.loads((folder / first.name).read_text())
        if release == "v2":
            data["SeriesInstanceUID"] = "1.2.3."
        (tmp_path / release / first.name).write_text(json.dumps(data))
    with pytest.raises(InputError, match="differs from") as info:
        write_annotation_studies([tmp_path / "v1", tmp_path / "v2"], tmp_path / "out")
    assert str(info.value).startswith(str(tmp_path / "v2" / first.name))
    with pytest.raises(InputError, match="also used by"):
        write_annotation_studies([tmp_path / "v1", tmp_path / "v1"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('{"Folder": "A", "Annotation": {}}', "missing keys"),
        (
            '{"Folder": "../A", "SeriesInstanceUID": "1.2.", "Annotation": {"e": [[[1,2,3]]]}}',
            "Folder",
        ),
        (
            '{"Folder": "A", "SeriesInstanceUID": "1.2.", "Annotation": {"expert1": [[[1,2,3]]]}}',
            "shape (1, 3)",
        ),
        (
            '{"Folder": "A", "SeriesInstanceUID": "1.2.", "Annotation": {"expert1": '
            "[[[1,600,3],[1,600,4],[2,600,3],[2,600,4],[3,600,3],[3,600,4]]]}}",
            "outside the image",
        ),
        (
            '{"Folder": "A", "SeriesInstanceUID": "1.2.", "Annotation": {"expert1": [{"segments":'
            ' [[[1,2,3],[1,2,4]],[[2,2,3],[2,2,4]],[[3,2,3],[3,2,4]]], "type": "S1"}]}}',
            "type 'S1'",
        ),
        (
            '{"Folder": "A", "SeriesInstanceUID": "1.2.", "Annotation": {"expert1": [{"segments":'
            ' [], "type": "L1"}], "expert2": [[[1,2,3]]]}}',
            "mixes v1",
        ),
    ],
)
def test_malformed_annotation_is_reported(tmp_path: Path, content: str, expected: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    bad = src / "A.json"
    bad.write_text(content)
    with pytest.raises(InputError) as info:
        write_annotation_studies(src, tmp_path / "out")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(f"{bad}: ") and expected in message and "expected" in message
    assert not (tmp_path / "out" / "mosmed").exists()


def test_arguments_and_existing_output_are_checked(tmp_path: Path) -> None:
    for kwargs in ({"verse_cases": 3}, {"size": "huge"}, {"mosmed_studies": -1}):
        with pytest.raises(ParamsError, match="expected"):
            write_sample(tmp_path / "x", **kwargs)  # type: ignore[arg-type]
    out = tmp_path / "s"
    write_sample(out, size="tiny", mosmed_studies=0)
    with pytest.raises(ParamsError, match="already exists"):
        write_sample(out, size="tiny", mosmed_studies=0)
    write_sample(out, size="tiny", mosmed_studies=1, seed=3, overwrite=True)
    assert len(list((out / "mosmed" / "annotation").glob("*.json"))) == 1
    with pytest.raises(InputError, match="no annotation files"):
        write_annotation_studies(tmp_path, tmp_path / "y")


# --------------------------------------------------------------------------------------------
# Building blocks


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float64])
def test_nifti_writer_equals_nibabel(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 200, size=(5, 6, 7)).astype(dtype)
    affine = nib.load(REAL_MASK).affine if REAL_MASK.exists() else np.diag([1.0, 2.0, 3.0, 1.0])
    expected = nib.Nifti1Image(data, affine).to_bytes()
    assert nifti_header_bytes(data.shape, data.dtype, affine) == expected[:352]
    path = tmp_path / "a.nii.gz"
    write_nifti_gz(path, data.shape, dtype, affine, [data[:, :, :3], data[:, :, 3:]])
    with gzip.open(path, "rb") as f:
        assert f.read() == expected


def test_rle_frames_decode_exactly() -> None:
    rng = np.random.default_rng(5)
    cases = [
        rng.integers(0, 65535, size=(7, 300)).astype(np.uint16),  # literals, > 128 per row
        np.repeat(rng.integers(0, 3, size=(9, 1)), 700, axis=1).astype(np.uint16) * 4095,
        (rng.integers(-2, 2, size=(12, 33)) * 1000).astype(np.int16),
        np.zeros((1, 1), dtype=np.uint16),
    ]
    for pixels in cases:
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
        ds.PixelRepresentation = int(pixels.dtype == np.int16)
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = pydicom.encaps.encapsulate([encode_frame(pixels)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        np.testing.assert_array_equal(ds.pixel_array, pixels)


@pytest.mark.parametrize(("transfer_syntax", "signed"), [("explicit", False), ("rle", True)])
def test_slice_encoder_equals_dcmwrite(transfer_syntax: str, signed: bool) -> None:
    rng = np.random.default_rng(2)
    study, kernels = study_plan("F", 0, rng, signed=signed, transfer_syntax=transfer_syntax)
    thin, _ = thin_and_decoy(
        series_uid=real_style_series_uid(rng),
        decoy_uid=real_style_series_uid(rng),
        rows=8,
        pixel_spacing=0.7,
        slice_spacing=0.8,
        slice_thickness=1.0,
        n_slices=3,
        fov_centre_ras=(0.0, 0.0),
        z0=-50.0,
        kernels=kernels,
    )
    hu = (np.arange(64, dtype=np.int16).reshape(8, 8) * 50 - 1024).astype(np.int16)
    with allow_invalid_uids():
        base = _base_dataset(study, thin)
        pixel_data = _pixel_data(_pixels(hu, signed), study.transfer_syntax)
        position = ["-1.5", "2.25", "-50.8"]
        got = SliceEncoder(base).encode(
            sop_instance_uid="1.2.3.4", instance_number=2, position=position, pixel_data=pixel_data
        )
        full = copy.deepcopy(base)
        full.SOPInstanceUID, full.InstanceNumber = "1.2.3.4", 2
        full.ImagePositionPatient, full.SliceLocation = position, position[2]
        full.PixelData = pixel_data
        full["PixelData"].VR = "OB" if transfer_syntax == "rle" else "OW"
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, full, enforce_file_format=True)
        assert got == buf.getvalue()
        ds = pydicom.dcmread(io.BytesIO(got))
        np.testing.assert_array_equal(ds.pixel_array * 1.0 + float(ds.RescaleIntercept), hu)


def test_phantom_keypoints_and_centroid() -> None:
    v = vertebra_from_heights(
        15,
        np.array([0.0, -40.0, 0.0]),
        12.0,
        (12.0, 16.0, 20.0),
        depth=30.0,
        width=40.0,
        canal_radius=8.0,
        spinous_length=20.0,
        fracture="wedge",
    )
    np.testing.assert_allclose(v.heights_mm(), (12.0, 16.0, 20.0))
    again = vertebra_from_keypoints(15, v.keypoints, depth_fraction=0.75)
    np.testing.assert_allclose(again.centroid, v.centroid, atol=1e-6)
    phantom = build_phantom([v], Trunk(center_xy=(0.0, 15.0)))
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    affine[:3, 3] = v.centroid - 0.5 * np.array([40, 40, 40])
    hu, label = sample_volume(phantom, (81, 81, 81), affine, depth=7)
    centre = np.rint(world_to_voxel(affine, v.centroid)).astype(int)
    assert label[tuple(centre)] == 15 and hu[tuple(centre)] == 250
    for mid in _midpoints(world_to_voxel(affine, v.keypoints)):
        assert hu[tuple(np.rint(mid).astype(int))] >= 250
    assert (hu == 1000).any() and (hu == 700).any() and (hu == 40).any()
