"""Streaming read access to NIfTI-1 images (``.nii`` and ``.nii.gz``), as VerSe ships them.

Spec: https://nifti.nimh.nih.gov/nifti-1 . The header is parsed by nibabel; voxels are streamed
straight from the (gzip) byte stream slab by slab along the slowest (last) axis, so memory stays
bounded by one slab whatever the volume size, and decompression runs through ISA-L (``isal``),
which is two to three times as fast as Python's ``gzip``. Arrays keep their on-disk dtype: no
float64 detour (nibabel's ``get_fdata`` would allocate the whole volume as float64). Files may also
be members of a zip archive (:class:`~verse_etl.io.files.SourceFile`), read in place.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import nibabel as nib
import numpy as np
from isal import isal_zlib
from nibabel.arrayproxy import ArrayProxy

from verse_etl.errors import InputError
from verse_etl.geometry.affines import axcodes, is_valid_affine, spacing
from verse_etl.io.files import SourceFile, require_regular
from verse_etl.params import InputLimits
from verse_etl.stopping import check_stop


@dataclass(frozen=True)
class NiftiInfo:
    """Header facts of one NIfTI file.

    ``affine`` is nibabel's best affine (sform if set, else qform), mapping voxel indices of the
    array as stored to RAS+ mm.
    """

    path: Path | SourceFile
    shape: tuple[int, int, int]
    dtype: np.dtype
    affine: np.ndarray
    qform_code: int
    sform_code: int
    vox_offset: int
    scl_slope: float
    scl_inter: float
    orientation: str
    spacing_mm: tuple[float, float, float]

    @property
    def scaled(self) -> bool:
        """True if scl_slope/scl_inter are set and not the identity."""
        slope, inter = self.scl_slope, self.scl_inter
        if not np.isfinite(slope) or slope == 0:
            return False
        return not (slope == 1 and (not np.isfinite(inter) or inter == 0))


class _Stream(Protocol):
    """What the voxel readers need of a byte stream: a file opened ``rb`` (or a zip member) or
    an :class:`InflateReader`."""

    def read(self, n: int, /) -> bytes: ...

    def readinto(self, view: memoryview, /) -> int | None: ...


class InflateReader:
    """Read-only stream of the decompressed bytes of a gzip file (all members), via ISA-L.

    A thin seam over python-isal's C gzip reader (``isal_zlib._GzipReader``, what
    ``igzip.IGzipFile`` wraps in an ``io.BufferedReader``): :meth:`readinto` inflates straight
    into the caller's buffer (a Zarr writer's staging row), with no intermediate ``bytes`` and
    no copy, and the GIL is released while it inflates, so Zarr encoder threads run beside it.
    That is the fastest of the decoders measured by benchmarks/convert.py (the limit's own).
    Multi-member files and zero padding after the last member read on, as ``gzip`` does.

    Raises
    ------
    EOFError
        If the file ends inside a gzip member (truncated download).
    isal_zlib.error, OSError
        If the compressed data is corrupt or not gzip.
    """

    def __init__(self, raw: BinaryIO, block: int = 1 << 20):
        self._reader = isal_zlib._GzipReader(raw, block)  # compressed bytes read per call

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` with the next decompressed bytes; fewer only at the end of the data."""
        out = memoryview(view).cast("B")
        filled = 0
        while filled < len(out):
            n = self._reader.readinto(out[filled:])
            if not n:
                break
            filled += n
        return filled

    def read(self, n: int) -> bytes:
        """Up to ``n`` decompressed bytes (``b""`` at the end)."""
        buffer = bytearray(n)
        return bytes(buffer[: self.readinto(memoryview(buffer))])


# python-isal's stub declares isal_zlib.error as an instance; it is an exception class.
_STREAM_ERRORS: tuple[type[Exception], ...] = (  # type: ignore[assignment]
    OSError,
    EOFError,
    zlib.error,
    isal_zlib.error,
    gzip.BadGzipFile,
    zipfile.BadZipFile,
)
"""What reading a voxel stream raises for a truncated or corrupt file (or zip member)."""


def _undecodable(path: Path | SourceFile, error: Exception) -> InputError:
    return InputError(
        path,
        f"cannot decompress the voxel data ({type(error).__name__}: {error})",
        "the file is corrupt or truncated; re-download it",
        check="read",
    )


@contextmanager
def _open(path: Path | SourceFile) -> Iterator[_Stream]:
    if isinstance(path, SourceFile) and path.member is not None:
        with path.open() as raw:  # a member of a release zip, read in place
            # A zip member (ZipExtFile) reads into a buffer; SourceFile.open types it as BinaryIO.
            yield InflateReader(raw) if path.name.endswith(".gz") else cast(_Stream, raw)
        return
    disk = path.path if isinstance(path, SourceFile) else path
    with open(disk, "rb") as raw:
        yield InflateReader(raw) if disk.name.endswith(".gz") else raw


def _load(
    path: Path | SourceFile,
) -> tuple[nib.Nifti1Header, np.ndarray, int, float | None, float | None]:
    """Header, affine, vox_offset, scl_slope and scl_inter of a file, voxels untouched.

    Files on disk go through ``nib.load``; a zip member's 348-byte header is parsed from the
    stream (nibabel cannot open a member), with the affine nibabel would give (best affine).
    """
    if not (isinstance(path, SourceFile) and path.member is not None):
        disk = path.path if isinstance(path, SourceFile) else path
        require_regular(disk)  # nib.load would block for ever on a FIFO
        img = nib.load(str(disk))
        if not isinstance(img, nib.Nifti1Image):
            raise InputError(
                path,
                f"expected a NIfTI-1 image, got {type(img).__name__}",
                "convert it to NIfTI-1",
                check="read",
            )
        # Like vox_offset, the scaling lives on the proxy: nibabel clears it in img.header.
        # A loaded image's dataobj is its ArrayProxy (nibabel types it as any array-like).
        proxy = cast(ArrayProxy, img.dataobj)
        return img.header, img.affine, int(proxy.offset), proxy.slope, proxy.inter
    with _open(path) as stream:
        raw = stream.read(348)
    if len(raw) < 348 or raw[344:347] != b"n+1":
        raise InputError(
            path,
            f"expected a single-file NIfTI-1 header (magic n+1), got {raw[344:348]!r}",
            "convert it to NIfTI-1",
            check="read",
        )
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=True)
    slope, inter = header.get_slope_inter()
    return header, header.get_best_affine(), int(header["vox_offset"]), slope, inter


def read_nifti_info(path: Path | SourceFile, limits: InputLimits | None = None) -> NiftiInfo:
    """Read the header of a NIfTI-1 file (on disk or in a zip) without touching the voxels.

    Raises
    ------
    InputError
        If the file is not a readable NIfTI-1 image, is not 3-D, has an unusable affine, holds
        voxels that are not real numbers (``voxel_type``: complex, RGB) or claims more voxels
        than ``limits`` allow (``too_large``, refused before anything is allocated).
    """
    limits = limits or InputLimits()
    try:
        hdr, affine, vox_offset, slope, inter = _load(path)
    except FileNotFoundError as e:
        raise InputError(path, "file not found", "check the source folder", check="read") from e
    except InputError:
        raise
    except Exception as e:  # nibabel raises many types for a broken header
        raise InputError(
            path,
            f"not a readable NIfTI file ({type(e).__name__}: {e})",
            "re-download the file",
            check="read",
        ) from e
    shape = tuple(int(s) for s in hdr.get_data_shape())
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        shape = shape[:3]
    if shape and min(shape) < 1:
        raise InputError(
            path,
            f"header gives a size below 1 (shape {shape}; expected every dim[1..] >= 1)",
            "the header is corrupt; re-download the file",
            check="shape",
        )
    if len(shape) != 3:
        raise InputError(
            path,
            f"expected a 3-D volume, got shape {shape}",
            "split 4-D series first",
            check="shape",
        )
    voxels = math.prod(shape)
    if voxels > limits.max_voxels or shape[0] * shape[1] > limits.max_slice_pixels:
        raise InputError(
            path,
            f"header claims shape {shape} ({voxels} voxels, {shape[0] * shape[1]} per slice; "
            f"expected at most checks.limits.max_voxels = {limits.max_voxels} and "
            f"max_slice_pixels = {limits.max_slice_pixels}); not read",
            "check the header; raise the limits if the volume is real",
            check="too_large",
        )
    dtype = hdr.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise InputError(
            path,
            f"voxels of type {dtype} (expected real numbers: an integer or float CT or mask; "
            "got complex or multi-channel data such as RGB)",
            "convert the image to a single-channel real type",
            check="voxel_type",
        )
    affine = np.asarray(affine, dtype=float)
    if not is_valid_affine(affine):
        raise InputError(
            path,
            f"affine is not finite or is singular (got {affine.round(4).tolist()})",
            "fix the sform/qform of the file",
            check="affine",
        )
    return NiftiInfo(
        path=path,
        shape=shape,
        dtype=dtype,
        affine=affine,
        qform_code=int(hdr["qform_code"]),
        sform_code=int(hdr["sform_code"]),
        # img.header is a copy whose vox_offset nibabel resets; the proxy knows the real one.
        vox_offset=vox_offset,
        scl_slope=float("nan") if slope is None else float(slope),
        scl_inter=float("nan") if inter is None else float(inter),
        orientation=axcodes(affine),
        spacing_mm=spacing(affine),
    )


class NiftiVoxelReader:
    """Read the voxel block of a NIfTI file front to back, into arrays the caller owns.

    The zero-copy way to stream a volume: :meth:`read_into` decompresses the next slices
    straight into the caller's array (a Zarr writer's staging buffer), where
    :func:`iter_nifti_slabs` hands out its own buffer that the caller then copies. Use as a
    context manager.

    ``dtype`` is what :meth:`read_into` fills: the on-disk dtype, or float32 if the header sets
    a non-identity ``scl_slope``/``scl_inter`` (then the slices are decoded apart and scaled).
    """

    def __init__(self, info: NiftiInfo) -> None:
        self.info = info
        self.dtype = np.dtype(np.float32) if info.scaled else info.dtype.newbyteorder("=")
        self.position = 0  # slices read so far
        self._stack = contextlib.ExitStack()
        self._stream: _Stream | None = None

    def __enter__(self) -> NiftiVoxelReader:
        with self._errors():
            self._stream = self._stack.enter_context(_open(self.info.path))
            _skip(self._stream, self.info.vox_offset, self.info.path)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def read_into(self, out: np.ndarray) -> None:
        """Fill ``out`` (Fortran-ordered, shape ``(n0, n1, k)``, dtype :attr:`dtype`) with the
        next ``k`` slices.

        Raises
        ------
        InputError
            If the file ends early (truncated download) or the gzip stream is corrupt.
        """
        assert self._stream is not None, "use NiftiVoxelReader as a context manager"
        check_stop()  # Ctrl-C / SIGTERM end a case between slabs
        nx, ny, nz = self.info.shape
        k = out.shape[2]
        if out.shape[:2] != (nx, ny) or self.position + k > nz or out.dtype != self.dtype:
            raise ValueError(f"cannot read {out.shape} {out.dtype} at slice {self.position}")
        if not out.flags.f_contiguous:
            raise ValueError("out must be Fortran-ordered and contiguous")
        with self._errors():
            if self.info.scaled:
                raw = np.empty(out.shape, self.info.dtype, order="F")
                _read_exact(self._stream, _bytes(raw), self.info.path, self.position)
                inter = self.info.scl_inter if np.isfinite(self.info.scl_inter) else 0.0
                np.multiply(raw, np.float32(self.info.scl_slope), out=out, casting="unsafe")
                out += np.float32(inter)
            else:
                view = _bytes(out)
                _read_exact(self._stream, view, self.info.path, self.position)
                if self.info.dtype.byteorder == ">" or (
                    self.info.dtype.byteorder == "=" and not np.little_endian
                ):
                    out.byteswap(inplace=True)  # stored big-endian; out is native
            if self.position + k == nz:
                _drain(self._stream)
        self.position += k

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except _STREAM_ERRORS as e:
            raise _undecodable(self.info.path, e) from e


def _bytes(array: np.ndarray) -> memoryview:
    """The bytes of a contiguous array, in memory order, as a writable memoryview."""
    # numpy's stubs give ndarray the buffer protocol (__buffer__) for Python >= 3.12 only.
    return memoryview(array.reshape(-1, order="A").view(np.uint8))  # type: ignore[arg-type]


def iter_nifti_slabs(info: NiftiInfo, depth: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(k0, slab)`` with ``slab = volume[:, :, k0:k0 + depth]`` in the on-disk dtype.

    NIfTI stores voxels in Fortran order, so a run of whole slices along the last axis is one
    contiguous byte range: each slab is one read into a reused buffer. The returned slab is a
    Fortran-ordered view valid until the next iteration; copy it to keep it. If the header sets a
    non-identity ``scl_slope``/``scl_inter`` the slab is scaled to float32.

    Raises
    ------
    InputError
        If the file ends early (truncated download) or the gzip stream is corrupt.
    """
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    nx, ny, nz = info.shape
    dtype = info.dtype
    slice_bytes = nx * ny * dtype.itemsize
    buffer = bytearray(slice_bytes * min(depth, nz))
    try:
        with _open(info.path) as stream:
            _skip(stream, info.vox_offset, info.path)
            for k0 in range(0, nz, depth):
                check_stop()
                k = min(depth, nz - k0)
                view = memoryview(buffer)[: k * slice_bytes]
                _read_exact(stream, view, info.path, k0)
                slab = np.frombuffer(view, dtype=dtype).reshape((nx, ny, k), order="F")
                if info.scaled:
                    inter = info.scl_inter if np.isfinite(info.scl_inter) else 0.0
                    slab = (slab.astype(np.float32) * np.float32(info.scl_slope)) + np.float32(
                        inter
                    )
                yield k0, slab
            _drain(stream)
    except _STREAM_ERRORS as e:
        raise _undecodable(info.path, e) from e


def _drain(stream: _Stream) -> None:
    """Read a gzip stream to its end after the last voxel.

    Only the end of a gzip member carries its CRC-32 and length: a stream that is damaged but
    still inflates (zeroed bytes can form valid deflate blocks) is caught there and nowhere else,
    so the voxels are not trusted until the trailer has been checked.
    """
    if not isinstance(stream, InflateReader):
        return
    sink = bytearray(1 << 16)
    while stream.readinto(memoryview(sink)):
        pass


def _skip(stream: _Stream, n: int, path: Path | SourceFile) -> None:
    while n > 0:
        got = stream.read(min(n, 1 << 20))
        if not got:
            raise InputError(
                path,
                "file ends inside the header",
                "the file is truncated; re-download it",
                check="read",
            )
        n -= len(got)


def _read_exact(stream: _Stream, view: memoryview, path: Path | SourceFile, k0: int) -> None:
    filled = 0
    while filled < len(view):
        n = stream.readinto(view[filled:])
        if not n:
            raise InputError(
                path,
                f"file ends early: voxel data stops inside slab starting at slice {k0} "
                f"(expected {len(view)} bytes, got {filled})",
                "the file is truncated; re-download it",
                check="read",
            )
        filled += n


def stored_voxel_bytes(info: NiftiInfo) -> int | None:
    """How many voxel bytes the file holds, where that is cheap to know, else None.

    An uncompressed file on disk: its size past ``vox_offset``; a gzip file on disk: the
    uncompressed size from its trailer (ISIZE, modulo 2**32; exact for the one-member files
    NIfTI writers make), minus ``vox_offset``. Zip members and multi-member streams: None.
    """
    if isinstance(info.path, SourceFile) and info.path.member is not None:
        return None
    disk = info.path.path if isinstance(info.path, SourceFile) else Path(info.path)
    try:
        size = disk.stat().st_size
        if not disk.name.endswith(".gz"):
            return size - info.vox_offset
        with open(disk, "rb") as f:
            f.seek(-4, io.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
    except OSError:
        return None
    return isize - info.vox_offset


def header_matches_data(info: NiftiInfo) -> bool | None:
    """False if the file's voxel data cannot be the size its header's shape and dtype say.

    None where the size is not cheap to know (:func:`stored_voxel_bytes`). Used to blame the
    right file when a CT and its mask disagree on their shape.
    """
    stored = stored_voxel_bytes(info)
    if stored is None:
        return None
    expected = math.prod(info.shape) * info.dtype.itemsize
    gz = not isinstance(info.path, SourceFile) and str(info.path).endswith(".gz")
    if gz or (isinstance(info.path, SourceFile) and info.path.name.endswith(".gz")):
        return (expected + info.vox_offset) % (1 << 32) == (stored + info.vox_offset) % (1 << 32)
    return stored >= expected
