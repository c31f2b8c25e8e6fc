"""DICOM CT files: which files are images, what their headers say, and their pixels as HU.

Spec: DICOM PS3.3 C.7.6.2 (Image Plane Module: ImagePositionPatient, ImageOrientationPatient,
PixelSpacing), C.11.1 (Modality LUT: RescaleSlope, RescaleIntercept), PS3.5 §8 and Annex A
(transfer syntaxes). Headers are read with ``stop_before_pixels=True`` and only the tags listed
in :data:`HEADER_TAGS`; pixels are decoded one slice at a time when a store is written, so memory
stays bounded by one slice whatever the series size. Compressed transfer syntaxes (JPEG,
JPEG-LS, JPEG 2000, HTJ2K, RLE) decode through pydicom's pylibjpeg and pillow plugins.

How slices are ordered and which series are clean volumes is :mod:`verse_etl.geometry.series`.

**PHI.** What reaches the Parquet tables is decided by the allow-list :data:`SERIES_TAGS`; the
header of every file is read with ``specific_tags`` so that patient names, ids, birth dates and
addresses are never even decoded.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag, Tag

from verse_etl.errors import InputError, is_transient, one_line
from verse_etl.io.series_identity import group_without_uid
from verse_etl.params import InputLimits
from verse_etl.stopping import check_stop

SERIES_TAGS: dict[str, str] = {
    "Modality": "modality",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "model",
    "ConvolutionKernel": "kernel",
    "KVP": "kvp",
    "SliceThickness": "slice_thickness_mm",
    "SeriesNumber": "series_number",
    "GantryDetectorTilt": "gantry_detector_tilt_deg",
    "PatientPosition": "patient_position",
}
"""The allow-list: DICOM keyword -> ``series`` table column, for series-level descriptive tags.

Nothing else read from a header leaves this module except the UIDs, geometry and pixel
description of :class:`SliceHeader`. Free-text tags that may carry identity (SeriesDescription,
StudyDescription, InstitutionName, names, ids, dates, addresses) are deliberately absent.
"""

HEADER_TAGS: tuple[str, ...] = (
    "SpecificCharacterSet",  # needed to decode the allow-listed strings correctly
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "InstanceNumber",
    "AcquisitionNumber",
    "ImageType",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "RescaleSlope",
    "RescaleIntercept",
    "BitsAllocated",  # with BitsStored and PixelRepresentation: whether the pixels can be
    "BitsStored",  # read where they lie (see SliceHeader.pixel_offset)
    "PixelRepresentation",
    *SERIES_TAGS,
)
"""Every tag read from a header (pydicom ``specific_tags``)."""

# The keywords above as tags, resolved once: pydicom resolves a keyword given to dcmread's
# specific_tags or to ``in`` with a slow path (about 4 us each, 0.11 ms for HEADER_TAGS, an
# eighth of a slice header's cost), and a tag at once.
_HEADER_TAG_LIST: list[BaseTag] = [Tag(keyword) for keyword in HEADER_TAGS]
_ROWS, _COLUMNS = Tag("Rows"), Tag("Columns")
_SERIES_TAG_LIST: tuple[tuple[str, BaseTag], ...] = tuple((k, Tag(k)) for k in SERIES_TAGS)


def _not_invalid_uid(record: logging.LogRecord) -> bool:
    return "Invalid value for VR UI" not in record.getMessage()


# MosMed's real UIDs end in '.' (invalid for VR UI, kept verbatim: MOSMED.md §1.5); pydicom
# reports every access through both `warnings` (silenced around each read below) and its logger,
# which would flood a build's log with one line per slice. Only that one message is dropped.
logging.getLogger("pydicom").addFilter(_not_invalid_uid)
# The same report through `warnings`, muted once at import as well: `warnings.catch_warnings`
# (used around each read below) is not thread-safe, and cases run in threads.
warnings.filterwarnings(
    "ignore", message=r"Invalid value for VR UI: '[0-9.]+\.'", category=UserWarning
)

LOCALIZER = "LOCALIZER"
"""ImageType value of scout/localizer projections (PS3.3 C.8.2.1.1.1), never part of a volume."""


@dataclass(frozen=True)
class SliceHeader:
    """What one single-frame image file says about itself (no pixels).

    ``position`` (ImagePositionPatient), ``orientation`` (ImageOrientationPatient) and
    ``pixel_spacing`` (PixelSpacing: row spacing, column spacing) are None when missing or not
    numbers of the right count; the geometry checks report that.
    """

    path: Path
    series_uid: str
    study_uid: str
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    slope: float
    intercept: float
    image_type: tuple[str, ...]
    transfer_syntax: str = ""
    attributes: dict[str, object] = field(default_factory=dict, compare=False)
    acquisition_number: int | None = None
    uid_derived: bool = False  # series_uid derived from the content (no UID in the header)
    # Where the header read stopped: the PixelData element, when the pixels are native
    # little-endian 16-bit greyscale (read there, without parsing the header again: see
    # read_slice_hu); None for anything else (decoded by pydicom).
    pixel_offset: int | None = field(default=None, compare=False)
    pixel_signed: bool = field(default=False, compare=False)
    bits_stored: int = field(default=16, compare=False)

    @property
    def is_localizer(self) -> bool:
        """True for a scout/localizer image (ImageType holds ``LOCALIZER``)."""
        return any(v.strip().upper() == LOCALIZER for v in self.image_type)


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not a DICOM image, and why (kept for the record, never silently skipped)."""

    path: Path
    reason: str


@dataclass
class FileScan:
    """Every file of a study sorted into image series, skipped files and unusable images."""

    series: dict[str, list[SliceHeader]] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)


def read_slice_header(path: Path, limits: InputLimits | None = None) -> SliceHeader | SkippedFile:
    """Read one file's header and say whether it is a single-frame image.

    Returns
    -------
    SliceHeader
        For a DICOM image.
    SkippedFile
        For a file that is not DICOM, or DICOM without an image (DICOMDIR, a Philips DIRFILE,
        a structured report, ...).

    Raises
    ------
    InputError
        If the file is a DICOM image that cannot be used: no SeriesInstanceUID, multi-frame,
        not greyscale, or Rows/Columns unreadable.
    """
    # pydicom converts values lazily on attribute access, so every access stays inside the
    # filter: MosMed UIDs end in '.', invalid for VR UI but real, and are kept verbatim.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            read = _read_header(path)
            if isinstance(read, SkippedFile):
                return read
            ds, end = read
            return _header(path, ds, limits or InputLimits(), end)
        except InputError:
            raise
        except Exception as e:
            # pydicom raises many types for a damaged header, and converts values lazily:
            # an IS of '1e9999' is an OverflowError on access, deep sequences a RecursionError.
            if is_transient(e):
                raise
            raise InputError(
                path,
                f"DICOM header cannot be interpreted ({type(e).__name__}: {one_line(str(e), 200)})",
                "the file is corrupt; replace it",
                check="dicom_header",
            ) from e


def _read_header(path: Path) -> tuple[pydicom.Dataset, int | None] | SkippedFile:
    """The header, and the file offset where reading stopped (pydicom rewinds to the start of
    the PixelData element when it stops before the pixels)."""
    try:
        with open(path, "rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_HEADER_TAG_LIST)
            return ds, f.tell()
    except InvalidDicomError:
        # Files written without the 128-byte preamble and 'DICM' (older or hand-made ones)
        # still start with an element of group 0008 in little endian; anything else is not DICOM.
        with open(path, "rb") as f:
            start = f.read(4)
        if len(start) < 4 or start[:2] != b"\x08\x00":
            return SkippedFile(path, "not a DICOM file")
        try:
            forced = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=_HEADER_TAG_LIST, force=True
            )
            return forced, None
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as e:
            return SkippedFile(path, f"not a DICOM file ({type(e).__name__})")
    except (EOFError, OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        if is_transient(e):
            raise
        return SkippedFile(path, f"not a readable DICOM file ({type(e).__name__}: {e})")


def _header(
    path: Path, ds: pydicom.Dataset, limits: InputLimits, end: int | None = None
) -> SliceHeader | SkippedFile:
    if _ROWS not in ds or _COLUMNS not in ds:
        sop = ds.get("SOPClassUID")
        if sop is None and hasattr(ds, "file_meta"):
            sop = ds.file_meta.get("MediaStorageSOPClassUID")
        kind = getattr(sop, "name", None) or (str(sop) if sop else "unknown SOP class")
        return SkippedFile(path, f"DICOM file without an image ({kind})")
    # A missing or empty SeriesInstanceUID (de-identified files) is grouped by content later
    # (verse_etl.io.series_identity), as dcm2niix does.
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "") and int(frames) > 1:
        raise InputError(
            path,
            f"multi-frame image ({int(frames)} frames; expected single-frame CT slices)",
            "enhanced multi-frame objects are not converted; export the series as single frames",
            check="dicom_multiframe",
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise InputError(
            path,
            f"SamplesPerPixel is {samples} (expected 1: a greyscale CT image)",
            "colour or secondary-capture images are not CT volumes; remove the file",
            check="dicom_pixels",
        )
    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows * columns > limits.max_slice_pixels:
        # Refused before any pixel buffer is sized from it (a claimed 30000 x 30000 slice).
        raise InputError(
            path,
            f"Rows x Columns is {rows} x {columns} = {rows * columns} pixels (expected at "
            f"most checks.limits.max_slice_pixels = {limits.max_slice_pixels}); not read",
            "check the header; raise the limit if the image is real",
            check="too_large",
        )
    number = ds.get("InstanceNumber")
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return SliceHeader(
        path=path,
        series_uid=str(ds.SeriesInstanceUID) if uid else "",
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        instance_number=_integer(number),
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]  # 3 numbers or None
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_spacing(ds.get("PixelSpacing")),
        rows=rows,
        columns=columns,
        slope=_rescale(path, ds, "RescaleSlope", 1.0),
        intercept=_rescale(path, ds, "RescaleIntercept", 0.0),
        image_type=tuple(str(v) for v in (_values(ds.get("ImageType")))),
        transfer_syntax=syntax,
        attributes={k: _plain(ds.get(k)) for k, tag in _SERIES_TAG_LIST if tag in ds},
        acquisition_number=_integer(ds.get("AcquisitionNumber")),
        pixel_offset=end if _native_16bit(ds, syntax, samples) else None,
        pixel_signed=_integer(ds.get("PixelRepresentation")) == 1,
        bits_stored=_integer(ds.get("BitsStored")) or 16,
    )


_NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2": True, "1.2.840.10008.1.2.1": False}  # implicit VR?


def _native_16bit(ds: pydicom.Dataset, syntax: str, samples: int) -> bool:
    """Whether the pixels are uncompressed little-endian 16-bit greyscale (Implicit or
    Explicit VR Little Endian; not deflated, big endian or encapsulated)."""
    stored = _integer(ds.get("BitsStored"))
    return (
        syntax in _NATIVE_LITTLE_ENDIAN
        and samples == 1
        and _integer(ds.get("BitsAllocated")) == 16
        and stored is not None
        and 1 <= stored <= 16
        and _integer(ds.get("PixelRepresentation")) in (0, 1)
    )


def _values(value: object) -> tuple[object, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, (str, bytes)):
        return (value,)
    try:
        return tuple(value)  # type: ignore[arg-type]  # TypeError (not iterable) caught below
    except TypeError:
        return (value,)


def _integer(value: object) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)  # type: ignore[call-overload]  # TypeError/ValueError caught below
    except (TypeError, ValueError):
        return None


def _rescale(path: Path, ds: pydicom.Dataset, keyword: str, default: float) -> float:
    """RescaleSlope or RescaleIntercept: the default if absent, refused if not a finite number
    (a slope of ``1e9999`` or ``abc`` was silently taken as 1 before)."""
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(
            path,
            f"{keyword} is {str(value)[:40]!r} (expected a finite number)",
            "the pixel values cannot be turned into HU; fix the header",
            check="dicom_header",
        )
    return number


def _spacing(value: object) -> tuple[float, float] | None:
    """PixelSpacing as two positive numbers, else None (``0\\0`` made a singular affine)."""
    spacing = _floats(value, 2)
    return spacing if spacing is not None and min(spacing) > 0 else None  # type: ignore[return-value]  # 2 numbers (_floats(value, 2))


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        items = tuple(float(v) for v in _values(value))  # type: ignore[arg-type]  # TypeError/ValueError caught below
    except (TypeError, ValueError):
        return None
    if len(items) != n or not all(np.isfinite(items)):
        return None
    return items


def _plain(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, (int, float)):
        return value
    return str(value)


def _entries(folder: Path) -> Iterator[tuple[Path, bool]]:
    """Every entry below ``folder`` but its folders, with whether it is a file: a link to a file
    counts (as ``Path.is_file`` says), a link to a folder is listed and not followed (as
    :func:`os.walk`), a folder that cannot be listed is left out (as :func:`os.walk`).

    Listed with :func:`os.scandir`, whose entries know a plain file or folder without a
    ``stat``: one ``stat`` a file less at every reuse check of a study's hundreds of files."""
    pending = [os.fspath(folder)]
    while pending:
        top = pending.pop()
        try:
            with os.scandir(top) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                is_file = entry.is_file()
            except OSError:  # a link that cannot be followed (a loop): as pathlib answers
                is_file = Path(entry.path).is_file()
            yield Path(entry.path), is_file


def walk_files(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (any name, any nesting), sorted, links not followed
    (:func:`_entries`)."""
    return sorted(path for path, is_file in _entries(folder) if is_file)


def irregular_files(folder: Path) -> list[Path]:
    """Entries below ``folder`` that :func:`walk_files` leaves out: broken links, FIFOs, sockets
    and devices (links to folders are not followed either), so that the caller can report them."""
    return sorted(path for path, is_file in _entries(folder) if not is_file)


def scan_files(
    paths: Iterable[Path], limits: InputLimits | None = None, folder: str = ""
) -> FileScan:
    """Read every file's header and group the images by SeriesInstanceUID (exact string).

    Images without a SeriesInstanceUID (missing or empty) are grouped by their content and named
    by a derived UID (:func:`verse_etl.io.series_identity.group_without_uid`; ``folder``, the
    study folder, is part of that identity).

    Returns
    -------
    FileScan
        ``series``: SeriesInstanceUID -> slice headers in file order; ``skipped``: files that are
        not DICOM images, with the reason; ``errors``: DICOM images that cannot be used.
    """
    series: dict[str, list[SliceHeader]] = defaultdict(list)
    scan = FileScan()
    for path in paths:
        check_stop()
        try:
            header = read_slice_header(path, limits)
        except InputError as e:
            scan.errors.append(e)
            continue
        if isinstance(header, SkippedFile):
            scan.skipped.append(header)
        else:
            series[header.series_uid].append(header)
    anonymous = series.pop("", [])
    if anonymous:
        series.update(group_without_uid(anonymous, folder))
    scan.series = dict(series)
    return scan


def scan_folder(folder: Path) -> FileScan:
    """:func:`scan_files` over every file below ``folder``."""
    return scan_files(walk_files(folder))


def read_slice_hu(header: SliceHeader) -> np.ndarray:
    """Decode one slice and return Hounsfield units as an int16 ``[row, column]`` array.

    ``HU = stored * RescaleSlope + RescaleIntercept`` (PS3.3 C.11.1.1.2), computed in int32 when
    the slope is 1 and the intercept whole, else in float64 and kept only if exact.

    Raises
    ------
    InputError
        If the pixel data is missing or undecodable, or the rescaled values are not exact
        integers within int16 (they would be silently rounded or clipped).
    """
    pixels = _pixels_in_place(header)
    if pixels is None:
        pixels = _decoded_pixels(header)
    if pixels.shape != (header.rows, header.columns):
        raise InputError(
            header.path,
            f"pixel array shape {pixels.shape} (expected {(header.rows, header.columns)})",
            "the slice is multi-frame or corrupt",
            check="dicom_pixels",
        )
    if header.slope == 1.0 and float(header.intercept).is_integer():
        hu = pixels.astype(np.int32) + int(header.intercept)
    else:
        scaled = pixels.astype(np.float64) * header.slope + header.intercept
        hu = np.rint(scaled)
        if not np.allclose(hu, scaled, atol=1e-3):
            raise InputError(
                header.path,
                f"RescaleSlope {header.slope} and RescaleIntercept {header.intercept} "
                "give non-integer HU",
                "store as float or check the rescale tags",
                check="dicom_rescale",
            )
    if hu.size and (hu.min() < -32768 or hu.max() > 32767):
        raise InputError(
            header.path,
            f"HU range {hu.min()}..{hu.max()} does not fit int16",
            "check the rescale tags",
            check="dicom_rescale",
        )
    return hu.astype(np.int16)


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def _pixels_in_place(header: SliceHeader) -> np.ndarray | None:
    """The stored pixel values read where the header said the PixelData element starts
    (:attr:`SliceHeader.pixel_offset`): one read, no second parse of the header.

    Used only when the bytes there are what pydicom would decode the same way: the PixelData
    tag, VR OB/OW (explicit VR), a defined length of exactly Rows x Columns x 2 bytes, and
    values within BitsStored (so that pydicom's handling of the unused high bits cannot
    differ). Anything else returns None and pydicom decodes the file (and names what is wrong).
    """
    if header.pixel_offset is None:
        return None
    implicit = _NATIVE_LITTLE_ENDIAN.get(header.transfer_syntax)
    if implicit is None:
        return None
    count = header.rows * header.columns
    try:
        with open(header.path, "rb") as f:
            f.seek(header.pixel_offset)
            head = f.read(8 if implicit else 12)
            if implicit:
                ok = head[:4] == _PIXEL_DATA_TAG and head[4:8] == (2 * count).to_bytes(4, "little")
            else:
                ok = (
                    head[:4] == _PIXEL_DATA_TAG
                    and head[4:6] in (b"OW", b"OB")
                    and head[8:12] == (2 * count).to_bytes(4, "little")
                )
            if not ok:
                return None
            dtype = np.dtype("<i2" if header.pixel_signed else "<u2")
            data = f.read(2 * count)
    except OSError as e:
        if is_transient(e):
            raise
        return None  # pydicom's read names the trouble
    if len(data) != 2 * count:
        return None
    pixels = np.frombuffer(data, dtype=dtype).reshape(header.rows, header.columns)
    bits = header.bits_stored
    if bits < 16 and pixels.size:
        lo, hi = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
            if header.pixel_signed
            else (0, (1 << bits) - 1)
        )
        if pixels.min() < lo or pixels.max() > hi:
            return None  # bits above BitsStored in use: pydicom decides what they mean
    return pixels.astype(pixels.dtype.newbyteorder("="), copy=False)


def _decoded_pixels(header: SliceHeader) -> np.ndarray:
    """The pixel array as pydicom decodes it (the whole file parsed, any transfer syntax)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(header.path)
            if "PixelData" not in ds:
                raise InputError(
                    header.path,
                    f"has no pixel data (expected a PixelData element of {header.rows} x "
                    f"{header.columns} pixels, as Rows and Columns say)",
                    "the file holds no image; re-export the series or remove the file",
                    check="dicom_pixels",
                )
            return ds.pixel_array
    except InputError:
        raise
    except Exception as e:  # pydicom raises many types for broken or unsupported pixel data
        raise InputError(
            header.path,
            f"cannot decode pixel data ({type(e).__name__}: {e})",
            "the file is corrupt or its transfer syntax needs a decoder plugin",
            check="dicom_pixels",
        ) from e


class SeriesReader:
    """Decode slices in order straight into arrays the caller owns.

    The zero-copy way to stream a series into a Zarr writer's staging rows (see
    :meth:`verse_etl.stores.volumes.StoreWriter.write_array`); :func:`iter_slabs` allocates a slab per
    step that the writer then copies.
    """

    dtype = np.dtype(np.int16)

    def __init__(self, slices: tuple[SliceHeader, ...]) -> None:
        self.slices = slices
        self.position = 0  # slices read so far

    def read_into(self, out: np.ndarray) -> None:
        """Fill ``out`` (``(rows, columns, k)`` int16) with the HU of the next ``k`` slices.

        Raises
        ------
        InputError
            As :func:`read_slice_hu` for a slice that cannot be decoded exactly.
        """
        rows, cols = self.slices[0].rows, self.slices[0].columns
        k = out.shape[2]
        if (
            out.shape[:2] != (rows, cols)
            or self.position + k > len(self.slices)
            or out.dtype != self.dtype
        ):
            raise ValueError(f"cannot read {out.shape} {out.dtype} at slice {self.position}")
        for m, header in enumerate(self.slices[self.position : self.position + k]):
            check_stop()  # Ctrl-C / SIGTERM end a case between slices
            out[:, :, m] = read_slice_hu(header)
        self.position += k


def iter_slabs(slices: tuple[SliceHeader, ...], depth: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(k0, slab)`` with ``slab[:, :, n]`` the HU of ``slices[k0 + n]``.

    Slabs are Fortran-ordered int16 ``[row, column, slice]`` arrays of at most ``depth`` slices.
    """
    rows, cols = slices[0].rows, slices[0].columns
    for k0 in range(0, len(slices), depth):
        chunk = slices[k0 : k0 + depth]
        slab = np.empty((rows, cols, len(chunk)), dtype=np.int16, order="F")
        for m, header in enumerate(chunk):
            slab[:, :, m] = read_slice_hu(header)
        yield k0, slab
