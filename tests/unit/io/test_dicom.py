"""DICOM files are sorted into images, non-images and broken images; pixels become exact HU."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, RLELossless

from tests.dicom_factory import write_series
from verse_etl.errors import InputError
from verse_etl.geometry.series import check_series
from verse_etl.io.dicom import (
    SeriesReader,
    SkippedFile,
    _pixels_in_place,
    iter_slabs,
    read_slice_header,
    read_slice_hu,
    scan_folder,
)


def _volume(n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-1024, 2000, size=(8, 10, n)).astype(np.int16)


def _stack(folder: Path) -> np.ndarray:
    scan = scan_folder(folder)
    (headers,) = scan.series.values()
    geometry = check_series(headers)
    assert geometry.is_volume, geometry.problems
    return np.concatenate([slab.copy() for _, slab in iter_slabs(geometry.slices, 4)], axis=2)


def test_files_are_sorted_into_images_skipped_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "study" / "a" / "b"
    write_series(folder, _volume(3))
    (folder / "README.txt").write_text("not dicom")
    (folder / "empty").write_bytes(b"")
    # A DICOM file without an image (a DICOMDIR-like media directory record).
    shutil.copy(get_testdata_file("DICOMDIR"), folder / "DIRFILE")
    # A DICOM image without SeriesInstanceUID (de-identified) is grouped by its content into a
    # series of its own, named by a derived UID (verse_etl.io.series_identity).
    broken = write_series(tmp_path / "tmp", _volume(1))[0]
    ds = pydicom.dcmread(broken)
    del ds.SeriesInstanceUID
    ds.save_as(folder / "NOUID")
    scan = scan_folder(tmp_path / "study")
    assert sorted(len(v) for v in scan.series.values()) == [1, 3]
    (derived,) = [h for v in scan.series.values() for h in v if h.uid_derived]
    assert derived.path.name == "NOUID" and derived.series_uid.startswith("2.25.")
    skipped = {s.path.name: s.reason for s in scan.skipped}
    assert skipped["README.txt"] == "not a DICOM file"
    assert skipped["empty"] == "not a DICOM file"
    assert "without an image" in skipped["DIRFILE"] and "Directory" in skipped["DIRFILE"]
    assert not scan.errors


def test_dicom_without_preamble_is_still_read(tmp_path: Path) -> None:
    path = write_series(tmp_path / "s", _volume(1))[0]
    ds = pydicom.dcmread(path)
    # Written as a bare implicit-VR dataset (no 128-byte preamble, no 'DICM', no file meta), as
    # old exporters do: the file starts with an element of group 0008.
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    bare = tmp_path / "bare"
    pydicom.dcmwrite(bare, ds, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[:2] == b"\x08\x00"
    header = read_slice_header(bare)
    assert not isinstance(header, SkippedFile), header
    assert header.series_uid == str(ds.SeriesInstanceUID)


def test_multiframe_and_colour_images_are_refused_with_reason() -> None:
    with pytest.raises(InputError, match="multi-frame") as info:
        read_slice_header(Path(get_testdata_file("SC_rgb_rle_2frame.dcm")))
    assert info.value.check == "dicom_multiframe"
    with pytest.raises(InputError, match="SamplesPerPixel is 3") as info:
        read_slice_header(Path(get_testdata_file("SC_rgb_jpeg_gdcm.dcm")))
    assert info.value.check == "dicom_pixels"


def test_slices_sorted_feet_to_head_and_hu_exact(tmp_path: Path) -> None:
    vol = _volume()
    write_series(tmp_path / "s", vol)
    # InstanceNumber 1 is the most superior slice; position order puts it last.
    np.testing.assert_array_equal(_stack(tmp_path / "s"), vol[:, :, ::-1])


def test_signed_pixels_with_zero_intercept(tmp_path: Path) -> None:
    vol = _volume()
    write_series(tmp_path / "s", vol, intercept=0.0)
    np.testing.assert_array_equal(_stack(tmp_path / "s"), vol[:, :, ::-1])


def test_fractional_rescale_that_gives_whole_hu_is_exact(tmp_path: Path) -> None:
    path = write_series(tmp_path / "s", _volume(1), intercept=0.0)[0]
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.int32)
    ds.PixelData = (stored * 2).astype(np.int16).tobytes()
    ds.RescaleSlope = "0.5"
    ds.RescaleIntercept = "-1024.0"
    ds.save_as(path)
    header = read_slice_header(path)
    np.testing.assert_array_equal(read_slice_hu(header), stored - 1024)  # type: ignore[arg-type]


def test_non_integer_hu_is_refused_not_rounded(tmp_path: Path) -> None:
    path = write_series(tmp_path / "s", _volume(1), intercept=0.0)[0]
    ds = pydicom.dcmread(path)
    ds.RescaleSlope = "0.3"
    ds.save_as(path)
    with pytest.raises(InputError, match="non-integer HU") as info:
        read_slice_hu(read_slice_header(path))  # type: ignore[arg-type]
    assert info.value.check == "dicom_rescale"


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_ct_decodes_to_the_same_hu(tmp_path: Path, syntax: str) -> None:
    # pydicom's real CT slice, re-encoded losslessly (RLE natively, JPEG 2000 by openjpeg).
    original = Path(get_testdata_file("CT_small.dcm"))
    ds = pydicom.dcmread(original)
    ds.compress(syntax)
    compressed = tmp_path / "ct"
    ds.save_as(compressed)
    reference = read_slice_hu(read_slice_header(original))  # type: ignore[arg-type]
    header = read_slice_header(compressed)
    assert header.transfer_syntax == syntax  # type: ignore[union-attr]
    np.testing.assert_array_equal(read_slice_hu(header), reference)  # type: ignore[arg-type]
    assert reference.min() < -800 and reference.max() > 1000  # lung and bone: real HU


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_real_encoded_files_decode_like_the_uncompressed_one(name: str) -> None:
    # pydicom's test files: one image in many transfer syntaxes, written by other toolkits.
    reference = read_slice_hu(read_slice_header(Path(get_testdata_file("MR_small.dcm"))))  # type: ignore[arg-type]
    decoded = read_slice_hu(read_slice_header(Path(get_testdata_file(name))))  # type: ignore[arg-type]
    np.testing.assert_array_equal(decoded, reference)


def test_lossy_and_sign_mismatched_jpeg2000_ct_decode_to_plausible_hu() -> None:
    # 693_J2KI: lossy JPEG 2000 CT (intercept -1024); J2K_pixelrep_mismatch: the codestream says
    # unsigned while PixelRepresentation says signed, which pydicom corrects.
    lossy = read_slice_hu(read_slice_header(Path(get_testdata_file("693_J2KI.dcm"))))  # type: ignore[arg-type]
    assert lossy.dtype == np.int16 and lossy.shape == (512, 512)
    assert -4000 < lossy.min() < -900 and 300 < lossy.max() < 3000
    mismatch = read_slice_hu(
        read_slice_header(Path(get_testdata_file("J2K_pixelrep_mismatch.dcm")))
    )  # type: ignore[arg-type]
    assert mismatch.min() == -2000 and mismatch.max() == 1896


def test_jpeg_lossless_decoder_is_installed() -> None:
    # JPEG Lossless SV1 (the usual PACS export) decodes through pylibjpeg-libjpeg; pydicom's only
    # local file in it is RGB, compared with the RLE copy of the same image.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        jpeg = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"))
        rle = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    assert jpeg.file_meta.TransferSyntaxUID.name.startswith("JPEG Lossless")
    np.testing.assert_array_equal(jpeg.pixel_array, rle.pixel_array)


def test_undecodable_pixels_name_the_file(tmp_path: Path) -> None:
    path = write_series(tmp_path / "s", _volume(1))[0]
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(path)
    with pytest.raises(InputError, match="cannot decode pixel data") as info:
        read_slice_hu(read_slice_header(path))  # type: ignore[arg-type]
    assert info.value.path == str(path) and info.value.check == "dicom_pixels"


def test_missing_pixel_data_is_named(tmp_path: Path) -> None:
    path = write_series(tmp_path / "s", _volume(1))[0]
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    header = read_slice_header(path)  # the header alone is a valid image header
    with pytest.raises(
        InputError, match=r"has no pixel data \(expected a PixelData element of 8 x 10"
    ) as info:
        read_slice_hu(header)  # type: ignore[arg-type]
    assert info.value.path == str(path) and info.value.check == "dicom_pixels"


def test_series_reader_fills_caller_arrays_in_position_order(tmp_path: Path) -> None:
    vol = _volume(7)
    write_series(tmp_path / "s", vol)
    (headers,) = scan_folder(tmp_path / "s").series.values()
    geometry = check_series(headers)
    reader = SeriesReader(geometry.slices)
    first = np.empty((8, 10, 4), np.int16, order="F")
    rest = np.empty((8, 10, 3), np.int16, order="F")
    reader.read_into(first)
    reader.read_into(rest)
    np.testing.assert_array_equal(np.concatenate([first, rest], axis=2), vol[:, :, ::-1])
    with pytest.raises(ValueError, match="cannot read"):
        reader.read_into(np.empty((8, 10, 1), np.int16, order="F"))  # past the last slice


@pytest.mark.parametrize(
    ("syntax", "bits", "value", "in_place"),
    [
        ("explicit", 16, 3000, True),
        ("implicit", 16, 3000, True),
        ("explicit", 12, 4095, True),  # within BitsStored: the same whatever pydicom does above
        ("explicit", 12, 5000, False),  # bit 12 set: pydicom decides what it means
        ("rle", 16, 3000, False),  # compressed: pydicom decodes it
    ],
)
def test_native_pixels_are_read_in_place_and_equal_pydicoms(
    tmp_path: Path, syntax: str, bits: int, value: int, in_place: bool
) -> None:
    """The header read records where the pixels lie; read there (no second parse of the
    header) only when the bytes are exactly what pydicom would decode the same way."""
    vol = _volume(1)
    vol[0, 0, 0] = value - 1024  # stored value ``value`` (intercept -1024, unsigned)
    (path,) = write_series(tmp_path / "s", vol)
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = bits, bits - 1
    if syntax == "implicit":
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
    elif syntax == "rle":
        ds.compress(RLELossless)
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, enforce_file_format=True)
    header = read_slice_header(path)
    assert (header.pixel_offset is not None) == (syntax != "rle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = pydicom.dcmread(path).pixel_array.astype(np.int32) - 1024
    assert (_pixels_in_place(header) is not None) == in_place
    np.testing.assert_array_equal(read_slice_hu(header), expected)


def test_walk_files_lists_regular_files_and_links_to_files_in_path_order(tmp_path: Path) -> None:
    """Links to folders are not followed, broken links, loops and FIFOs left out (for
    ``irregular_files`` to report); the order is pathlib's (``a/b`` before ``a-b``), as the
    study's key and series order expect."""
    from verse_etl.io.dicom import irregular_files, walk_files

    study, elsewhere = tmp_path / "study", tmp_path / "elsewhere"
    (study / "a" / "b").mkdir(parents=True)
    (study / "a-b").mkdir()
    elsewhere.mkdir()
    for path in (study / "a" / "b" / "1.dcm", study / "a-b" / "2", study / "z", elsewhere / "o"):
        path.write_bytes(b"x")
    (study / "to_folder").symlink_to(elsewhere)
    (study / "to_file").symlink_to(elsewhere / "o")
    (study / "broken").symlink_to(tmp_path / "missing")
    (study / "loop").symlink_to(study / "loop")
    os.mkfifo(study / "fifo")
    assert walk_files(study) == [
        study / "a" / "b" / "1.dcm",
        study / "a-b" / "2",
        study / "to_file",
        study / "z",
    ]
    assert irregular_files(study) == sorted(
        study / name for name in ("broken", "fifo", "loop", "to_folder")
    )
    assert walk_files(tmp_path / "missing") == []
