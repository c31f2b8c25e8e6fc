"""Issue #13's hostile inputs, added to the bad-input corpus (one build over both).

Each VerSe kind is a clone of a good pristine scan (``verse008``'s files renamed to a subject of
its own, ``sub-verse9NN``) damaged one way; each MosMed kind is a small study of its own
(``tests/dicom_factory.py``), damaged one way. :data:`HOSTILE` lists the verdict each must get:
the file named, the check and a piece of the reason.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import warnings
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless

from tests.dicom_factory import write_series
from verse_etl_sample.verse_variants import rewrite_centroids

V19 = "dataset-verse19training"
TEMPLATE = "verse008"

# Kind -> subject of its clone (VerSe) or study folder (MosMed).
VERSE_CLONES: dict[str, str] = {
    "centroids_deep_json": "verse901",
    "sidecar_deep_json": "verse902",
    "centroids_too_large": "verse903",
    "centroid_label_float": "verse904",
    "centroid_label_true": "verse905",
    "centroid_label_infinite": "verse906",
    "ct_huge_shape": "verse907",
    "ct_rgb": "verse908",
    "ct_complex": "verse909",
    "ct_nan_voxels": "verse910",
    "ct_scl_slope_overflow": "verse911",
    "ct_constant": "verse912",
    "ct_header_lies_about_shape": "verse913",
    "ct_4d": "verse914",
    "ct_empty_file": "verse915",
    "ct_not_gzip": "verse916",
    "centroids_not_a_list": "verse917",
    "mask_huge_shape": "verse918",
    "ct_spacing_absurd": "verse919",
}

HOSTILE: list[tuple[str, str, str, str]] = [
    # (case, substring of quarantine.file, quarantine.check, substring of quarantine.reason)
    # VerSe JSON: the scan builds, the file is flagged.
    ("centroids_deep_json", "sub-verse901_seg-subreg_ctd.json", "too_deep", "nested 100000"),
    ("sidecar_deep_json", "sub-verse902_ct.json", "too_deep", "levels deep"),
    ("centroids_too_large", "sub-verse903_seg-subreg_ctd.json", "too_large", "max_json_bytes"),
    ("centroid_label_float", "sub-verse904_seg-subreg_ctd.json", "centroid_label", "label 10.7"),
    ("centroid_label_true", "sub-verse905_seg-subreg_ctd.json", "centroid_label", "label true"),
    (
        "centroid_label_infinite",
        "sub-verse906_seg-subreg_ctd.json",
        "centroid_label",
        "label Infinity",
    ),
    ("centroids_not_a_list", "sub-verse917_seg-subreg_ctd.json", "centroid_json", "direction"),
    # VerSe images: the scan is rejected before anything is allocated.
    ("ct_huge_shape", "sub-verse907_ct.nii.gz", "too_large", "(30000, 30000, 4000)"),
    ("mask_huge_shape", "sub-verse918_seg-vert_msk.nii.gz", "too_large", "max_voxels"),
    ("ct_rgb", "sub-verse908_ct.nii.gz", "voxel_type", "RGB"),
    ("ct_complex", "sub-verse909_ct.nii.gz", "voxel_type", "complex"),
    ("ct_4d", "sub-verse914_ct.nii.gz", "shape", "expected a 3-D volume"),
    ("ct_empty_file", "sub-verse915_ct.nii.gz", "read", "not a readable NIfTI"),
    ("ct_not_gzip", "sub-verse916_ct.nii.gz", "read", "not a readable NIfTI"),
    (
        "ct_header_lies_about_shape",
        "sub-verse913_ct.nii.gz",
        "shape",
        "does not fit the file's voxel data",
    ),
    # VerSe voxel sanity: the scan is kept and flagged.
    ("ct_nan_voxels", "sub-verse910_ct.nii.gz", "voxel_nonfinite", "are NaN or infinite"),
    ("ct_scl_slope_overflow", "sub-verse911_ct.nii.gz", "voxel_nonfinite", "scl_slope 1e+38"),
    ("ct_constant", "sub-verse912_ct.nii.gz", "voxel_constant", "every finite voxel is 7"),
    # No sform or qform: the geometry is pixdim's, 1e12 mm, which built as a valid scans row.
    ("ct_spacing_absurd", "sub-verse919_ct.nii.gz", "less_than_or_equal_to", "spacing_i_mm"),
    # Special files in the VerSe tree: named, never opened (a FIFO hung the build).
    ("verse_fifo", "sub-verse990_ct.nii.gz", "not_regular_file", "FIFO"),
    ("verse_broken_link", "sub-verse991_ct.nii.gz", "not_regular_file", "broken link"),
    ("verse_socket", "sub-verse992_ct.nii.gz", "not_regular_file", "socket"),
    # A zip whose central directory flags a member name as UTF-8 that is not: UnicodeDecodeError
    # escaped discovery and aborted the whole build.
    ("zip_name_not_utf8", "dataset-verse19validation.zip", "read", "UnicodeDecodeError"),
    # MosMed headers (one file of a series damaged: that file is named).
    ("dicom_instance_number_1e9999", "dicom/h_instance_overflow/", "dicom_header", "Overflow"),
    ("dicom_series_number_1e9999", "dicom/h_series_number/", "dicom_header", "Overflow"),
    ("dicom_number_of_frames_1e9999", "dicom/h_frames/", "dicom_header", "Overflow"),
    ("dicom_pixel_spacing_zero", "dicom/h_spacing_zero", "series_no_geometry", "PixelSpacing"),
    ("dicom_30000_squared", "dicom/h_rows_huge/", "too_large", "30000 x 30000"),
    ("dicom_rescale_slope_inf", "dicom/h_slope_inf/", "dicom_header", "finite number"),
    ("dicom_rescale_slope_zero", "dicom/h_slope_zero", "voxel_constant", "RescaleSlope is 0"),
    ("dicom_rescale_overflow", "dicom/h_slope_big/", "dicom_rescale", "does not fit int16"),
    ("dicom_truncated_header", "dicom/h_truncated/", "not_dicom_image", "without an image"),
    ("dicom_j2k_garbage", "dicom/h_j2k_garbage/", "dicom_pixels", "cannot decode"),
    ("dicom_j2k_wrong_size", "dicom/h_j2k_size/", "dicom_pixels", "cannot decode"),
    ("dicom_fifo", "dicom/h_fifo/IM-fifo", "not_regular_file", ""),
    # MosMed files beside the studies.
    ("annotation_fifo", "annotation/h_fifo.json", "not_regular_file", "FIFO"),
    ("annotation_deep_json", "annotation_v2/h_deep.json", "too_deep", "levels deep"),
    ("study_archive_fifo", "dicom/h_pipe.tar.gz", "not_regular_file", "FIFO"),
    # The same study twice: the copy is left out, the original keeps everything.
    ("study_copied", "dicom/mosmed_good_copy", "duplicate_series", "dicom/mosmed_good"),
]
"""Every hostile kind and the quarantine record it must give."""

HOSTILE_REJECTED_SCANS = (
    "verse907",
    "verse908",
    "verse909",
    "verse913",
    "verse914",
    "verse915",
    "verse916",
    "verse918",
)
"""Clones whose CT or mask is unusable: no row, no store."""

HOSTILE_BUILT_SCANS = (
    "verse901",
    "verse902",
    "verse903",
    "verse904",
    "verse905",
    "verse906",
    "verse910",
    "verse911",
    "verse912",
    "verse917",
)
"""Clones that build (a flagged JSON file or odd voxels leave the scan usable)."""

UID_KINDS: dict[str, str] = {
    "h_uid_traversal": "../../outside-the-build",
    "h_uid_absolute": "/tmp/verse-etl-absolute-uid",
    "h_uid_overlong": "1." + "2" * 300,
    "h_uid_case_a": "1.2.826.0.1.99.AB",
    "h_uid_case_b": "1.2.826.0.1.99.ab",
}
"""Studies whose SeriesInstanceUID would be a path outside the build, too long for a file name,
or differ from another only by letter case: each must get a store of its own inside the build."""


def clone_scan(verse: Path, pristine: Path, subject: str) -> tuple[Path, Path, Path, Path]:
    """Copy the pristine template scan to ``sub-<subject>``; return CT, mask, centroids, sidecar."""
    paths = []
    for part in ("rawdata", "derivatives"):
        source = pristine / V19 / part / f"sub-{TEMPLATE}"
        target = verse / V19 / part / f"sub-{subject}"
        target.mkdir(parents=True)
        for path in sorted(source.iterdir()):
            name = path.name.replace(f"sub-{TEMPLATE}", f"sub-{subject}")
            text = path.read_bytes()
            (target / name).write_bytes(text)
    raw, der = (
        verse / V19 / "rawdata" / f"sub-{subject}",
        verse / V19 / "derivatives" / f"sub-{subject}",
    )
    paths = [
        raw / f"sub-{subject}_ct.nii.gz",
        der / f"sub-{subject}_seg-vert_msk.nii.gz",
        der / f"sub-{subject}_seg-subreg_ctd.json",
        raw / f"sub-{subject}_ct.json",
    ]
    return tuple(paths)  # type: ignore[return-value]


def _header_only(path: Path, shape: tuple[int, ...], dtype: type = np.int16) -> None:
    """A gzipped NIfTI whose header claims ``shape`` and which holds 8 bytes of voxels."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + bytes(4) + bytes(8), mtime=0))


def _rewrite_ct(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Rewrite a CT with ``change(voxels, header)`` -> (voxels, header) through nibabel."""
    img = nib.load(path)
    data, header = change(np.asanyarray(img.dataobj), img.header.copy())
    nib.Nifti1Image(data, img.affine, header).to_filename(path)


def damage_verse(verse: Path, pristine: Path) -> None:
    """Write every VerSe hostile kind into ``verse`` (the corpus' damaged VerSe copy)."""
    files = {kind: clone_scan(verse, pristine, s) for kind, s in VERSE_CLONES.items()}

    def deep(n: int) -> str:
        return "[" * n + "]" * n

    files["centroids_deep_json"][2].write_text(deep(100_000))
    files["sidecar_deep_json"][3].write_text('{"KVP": ' + deep(5_000) + "}")
    centroids = files["centroids_too_large"][2]
    centroids.write_text(centroids.read_text() + " " * 300_000)  # still valid JSON, too big
    for kind, label in (
        ("centroid_label_float", 10.7),
        ("centroid_label_true", True),
        ("centroid_label_infinite", float("inf")),
    ):
        rewrite_centroids(files[kind][2], lambda e, v=label: [{**e[0], "label": v}, *e[1:]])
    files["centroids_not_a_list"][2].write_text('{"direction": ["P", "I", "R"]}')
    _header_only(files["ct_huge_shape"][0], (30000, 30000, 4000))
    _header_only(files["mask_huge_shape"][1], (30000, 30000, 4000), np.uint8)
    rgb = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
    _rewrite_ct(files["ct_rgb"][0], lambda d, h: (np.zeros(d.shape, rgb), _typed(h, rgb)))
    _rewrite_ct(
        files["ct_complex"][0],
        lambda d, h: (d.astype(np.complex64), _typed(h, np.complex64)),
    )
    _rewrite_ct(files["ct_4d"][0], lambda d, h: (np.stack([d, d], axis=-1), h))
    files["ct_empty_file"][0].write_bytes(b"")
    files["ct_not_gzip"][0].write_text("this is not a NIfTI file\n")

    # The header claims one slice fewer than the file holds: the CT is at fault, not the mask.
    ct = files["ct_header_lies_about_shape"][0]
    raw = bytearray(gzip.decompress(ct.read_bytes()))
    dims = np.frombuffer(bytes(raw[40:56]), dtype="<i2").copy()
    dims[3] -= 1
    raw[40:56] = dims.tobytes()
    ct.write_bytes(gzip.compress(bytes(raw), mtime=0))

    def with_nan(d: np.ndarray, h: nib.Nifti1Header):  # type: ignore[no-untyped-def]
        f = d.astype(np.float32)
        f[0, 0, 0] = np.nan
        f[1, 0, 0] = np.inf
        return f, _typed(h, np.float32)

    _rewrite_ct(files["ct_nan_voxels"][0], with_nan)

    # scl_slope 1e38 (header bytes 112..116): stored int16 values scale past float32.
    ct = files["ct_scl_slope_overflow"][0]
    raw = bytearray(gzip.decompress(ct.read_bytes()))
    raw[112:120] = np.array([1e38, 0.0], dtype="<f4").tobytes()
    ct.write_bytes(gzip.compress(bytes(raw), mtime=0))
    _rewrite_ct(files["ct_constant"][0], lambda d, h: (np.full_like(d, 7), h))
    ct = files["ct_spacing_absurd"][0]
    raw = bytearray(gzip.decompress(ct.read_bytes()))
    raw[80:84] = np.array([1e12], dtype="<f4").tobytes()  # pixdim[1]
    raw[252:256] = np.array([0, 0], dtype="<i2").tobytes()  # qform_code, sform_code
    ct.write_bytes(gzip.compress(bytes(raw), mtime=0))
    files["ct_spacing_absurd"][1].unlink()  # a scan without a mask: its mask would not match it

    special = verse / V19 / "rawdata"
    for subject in ("verse990", "verse991", "verse992"):
        (special / f"sub-{subject}").mkdir()
    os.mkfifo(special / "sub-verse990" / "sub-verse990_ct.nii.gz")
    (special / "sub-verse991" / "sub-verse991_ct.nii.gz").symlink_to(verse / "gone.nii.gz")
    _socket_file(special / "sub-verse992" / "sub-verse992_ct.nii.gz")
    _zip_with_undecodable_name(verse / "dataset-verse19validation.zip")


def _zip_with_undecodable_name(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("dataset-verse19validation/rawdata/x.json", "{}")
    raw = bytearray(path.read_bytes())
    entry = raw.rfind(b"PK\x01\x02")  # the central directory entry
    flags = int.from_bytes(raw[entry + 8 : entry + 10], "little") | 0x800  # "name is UTF-8"
    raw[entry + 8 : entry + 10] = flags.to_bytes(2, "little")
    raw[entry + 46 : entry + 49] = b"\xff\xfe\xfd"  # ... but it is not
    path.write_bytes(bytes(raw))


def _typed(header: nib.Nifti1Header, dtype: np.dtype | type) -> nib.Nifti1Header:
    header.set_data_dtype(dtype)
    return header


def _socket_file(path: Path) -> None:
    """A Unix socket bound at ``path`` (the file stays after the socket is closed)."""
    # AF_UNIX paths are limited to ~107 bytes: bind from the folder, by relative name.
    here = Path.cwd()
    os.chdir(path.parent)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(path.name)
    finally:
        os.chdir(here)


def _series(dicom: Path, name: str, shape=(8, 10, 6), **options) -> list[Path]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(sum(map(ord, name)))
    volume = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    return write_series(dicom / name, volume, **options)


def _set(paths: list[Path], keyword: str, value: str, vr: str) -> None:
    """Write ``value`` verbatim into a header element (pydicom would refuse or convert it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            ds = pydicom.dcmread(path)
            tag = pydicom.datadict.tag_for_keyword(keyword)
            ds[tag] = pydicom.dataelem.RawDataElement(
                pydicom.tag.Tag(tag), vr, len(value), value.encode(), 0, False, True
            )
            ds.save_as(path)


def damage_mosmed(mosmed: Path) -> None:
    """Write every MosMed hostile kind into ``mosmed`` (the corpus' damaged MosMed copy)."""
    dicom = mosmed / "dicom"
    paths = _series(dicom, "h_instance_overflow")
    _set(paths[2:3], "InstanceNumber", "1e9999", "IS")
    _set(_series(dicom, "h_series_number")[:1], "SeriesNumber", "1e9999", "IS")
    _set(_series(dicom, "h_frames")[:1], "NumberOfFrames", "1e9999", "IS")
    _series(dicom, "h_spacing_zero", spacing=(0.0, 0.0))
    paths = _series(dicom, "h_rows_huge")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(paths[0])
        ds.Rows = ds.Columns = 30000
        ds.save_as(paths[0])
    _set(_series(dicom, "h_slope_inf")[:1], "RescaleSlope", "1e9999", "DS")
    _set(_series(dicom, "h_slope_zero"), "RescaleSlope", "0 ", "DS")
    _set(_series(dicom, "h_slope_big")[:1], "RescaleSlope", "1000", "DS")
    paths = _series(dicom, "h_truncated")
    paths[0].write_bytes(paths[0].read_bytes()[:200])
    paths = _series(dicom, "h_j2k_garbage", shape=(40, 48, 3))  # J2K needs 32+ pixels a side
    _compress(paths[0], lambda data: data[:64] + bytes(range(256)) * 4)
    paths = _series(dicom, "h_j2k_size", shape=(40, 48, 3))
    small = write_series(dicom.parent / "small", np.zeros((32, 32, 1), np.int16))
    _compress(paths[0], lambda _: _j2k(small[0]))
    shutil.rmtree(dicom.parent / "small")
    _series(dicom, "h_fifo")
    os.mkfifo(dicom / "h_fifo" / "IM-fifo")
    os.mkfifo(mosmed / "annotation" / "h_fifo.json")
    os.mkfifo(dicom / "h_pipe.tar.gz")
    (mosmed / "annotation_v2" / "h_deep.json").write_text('{"Annotation": ' + "[" * 5000)
    shutil.copytree(dicom / "mosmed_good", dicom / "mosmed_good_copy")
    for study, uid in UID_KINDS.items():
        _series(dicom, study, series_uid=uid)


def _j2k(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    return ds.PixelData


def _compress(path: Path, payload) -> None:  # type: ignore[no-untyped-def]
    """Store ``path`` as JPEG 2000, its encapsulated pixel data replaced by ``payload(data)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
        frames = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
        ds.PixelData = pydicom.encaps.encapsulate([payload(next(frames))])
        ds.save_as(path)
