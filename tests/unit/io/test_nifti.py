"""Streaming NIfTI reads must equal nibabel's full read, in the on-disk dtype."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from verse_etl.errors import InputError
from verse_etl.io.nifti import NiftiVoxelReader, iter_nifti_slabs, read_nifti_info


def _write(path: Path, data: np.ndarray, affine: np.ndarray | None = None, **header: float) -> Path:
    img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 1.25, 1.0]) if affine is None else affine)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, str(path))
    return path


def _stream(path: Path, depth: int) -> np.ndarray:
    info = read_nifti_info(path)
    return np.concatenate([slab.copy() for _, slab in iter_nifti_slabs(info, depth)], axis=2)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float64, np.float32])
@pytest.mark.parametrize("depth", [1, 4, 7, 100])
def test_stream_equals_nibabel(tmp_path: Path, dtype: type, depth: int) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(-1000, 2000 if dtype != np.uint8 else 255, size=(9, 11, 13)).astype(dtype)
    if dtype == np.uint8:
        data = np.abs(data).astype(np.uint8)
    path = _write(tmp_path / "a.nii.gz", data)
    got = _stream(path, depth)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.asanyarray(nib.load(str(path)).dataobj))


def test_uncompressed_and_big_endian(tmp_path: Path) -> None:
    data = np.arange(5 * 6 * 7, dtype=">i2").reshape(5, 6, 7)
    img = nib.Nifti1Image(data, np.eye(4))
    img.set_data_dtype(np.dtype(">i2"))
    path = tmp_path / "b.nii"
    nib.save(img, str(path))
    np.testing.assert_array_equal(_stream(path, 3), data.astype(np.int16))


def test_scaled_file_is_rescaled(tmp_path: Path) -> None:
    data = np.arange(4 * 4 * 4, dtype=np.int16).reshape(4, 4, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "c.nii.gz"
    nib.save(img, str(path))
    expected = np.asanyarray(nib.load(str(path)).dataobj)
    np.testing.assert_allclose(_stream(path, 2), expected)


def test_info_reports_header(tmp_path: Path) -> None:
    affine = np.array([[0, 0, 1.0, -10], [-1.0, 0, 0, 20], [0, -2.0, 0, 30], [0, 0, 0, 1]])
    path = _write(tmp_path / "d.nii.gz", np.zeros((3, 4, 5), np.uint8), affine)
    info = read_nifti_info(path)
    assert info.shape == (3, 4, 5)
    assert info.vox_offset == 352
    assert info.orientation == "PIR"
    assert info.spacing_mm == (1.0, 2.0, 1.0)


def test_truncated_file_names_file_and_reason(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.nii.gz", np.ones((20, 20, 20), np.int16))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    info = read_nifti_info(path)
    with pytest.raises(InputError, match=r"e\.nii\.gz: file ends early"):
        list(iter_nifti_slabs(info, 4))


def test_corrupt_gzip_is_an_input_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.nii.gz", np.ones((20, 20, 20), np.int16))
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"f\.nii\.gz"):
        info = read_nifti_info(path)
        list(iter_nifti_slabs(info, 4))


@pytest.mark.parametrize("srow_z", [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, float("nan"), 1.0]])
def test_singular_or_nan_affine_rejected(tmp_path: Path, srow_z: list[float]) -> None:
    path = _write(tmp_path / "g.nii.gz", np.zeros((3, 3, 3), np.int16))
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[252:254] = np.int16(0).tobytes()  # qform_code 0: only the sform describes the grid
    raw[312:328] = np.asarray(srow_z, dtype="<f4").tobytes()  # srow_z
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(InputError, match=r"g\.nii\.gz: affine is not finite or is singular"):
        read_nifti_info(path)


def _read_all(path: Path, depth: int) -> np.ndarray:
    """Read a file with NiftiVoxelReader into fresh Fortran-ordered arrays of ``depth`` slices."""
    info = read_nifti_info(path)
    parts = []
    with NiftiVoxelReader(info) as reader:
        for k0 in range(0, info.shape[2], depth):
            k = min(depth, info.shape[2] - k0)
            out = np.empty((*info.shape[:2], k), reader.dtype, order="F")
            reader.read_into(out)
            parts.append(out)
    return np.concatenate(parts, axis=2)


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float64])
def test_voxel_reader_equals_nibabel(tmp_path: Path, name: str, dtype: type) -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(0, 255, size=(9, 11, 13)).astype(dtype)
    path = _write(tmp_path / name, data)
    got = _read_all(path, 5)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.asanyarray(nib.load(str(path)).dataobj))


def test_voxel_reader_big_endian_and_scaled(tmp_path: Path) -> None:
    data = np.arange(5 * 6 * 7, dtype=">i2").reshape(5, 6, 7)
    img = nib.Nifti1Image(data, np.eye(4))
    img.set_data_dtype(np.dtype(">i2"))
    nib.save(img, str(tmp_path / "b.nii"))
    np.testing.assert_array_equal(_read_all(tmp_path / "b.nii", 3), data.astype(np.int16))
    img = nib.Nifti1Image(data.astype(np.int16), np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, str(tmp_path / "c.nii.gz"))
    got = _read_all(tmp_path / "c.nii.gz", 4)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.asanyarray(nib.load(str(tmp_path / "c.nii.gz")).dataobj))


def test_voxel_reader_refuses_truncated_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.nii.gz", np.ones((20, 20, 20), np.int16))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match=r"e\.nii\.gz: file ends early"):
        _read_all(path, 4)


def test_multi_member_gzip_reads_on(tmp_path: Path) -> None:
    # gzip files may hold several members back to back (e.g. written by pigz or appended).
    data = np.random.default_rng(3).integers(-1000, 2000, (8, 9, 10)).astype(np.int16)
    path = _write(tmp_path / "m.nii.gz", data)
    raw = gzip.decompress(path.read_bytes())
    # Zero padding after the last member is ignored, as gzip does.
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]) + bytes(512))
    np.testing.assert_array_equal(_read_all(path, 3), data)
    np.testing.assert_array_equal(_stream(path, 3), data)


@pytest.mark.parametrize("damage", ["crc", "zeroed"])
@pytest.mark.parametrize("reader", ["slabs", "voxel_reader"])
def test_damage_that_still_inflates_is_caught_by_the_gzip_trailer(
    tmp_path: Path, reader: str, damage: str
) -> None:
    """Only the CRC-32 at a member's end tells damaged voxels from good ones when the deflate
    stream still decodes; both readers check it after the last slice."""
    # Incompressible voxels: the compressed data spans several of the reader's 1 MiB blocks, so
    # the last voxel is inflated before the reader has even fetched the trailer.
    noise = np.random.default_rng(0).integers(-1024, 3000, (64, 64, 400), dtype=np.int16)
    path = _write(tmp_path / "crc.nii.gz", noise)
    data = bytearray(path.read_bytes())
    if damage == "crc":
        data[-8] ^= 0xFF  # the CRC-32 of the uncompressed data (then ISIZE, 4 bytes)
    else:
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"crc\.nii\.gz: cannot decompress"):
        _stream(path, 7) if reader == "slabs" else _read_all(path, 7)
