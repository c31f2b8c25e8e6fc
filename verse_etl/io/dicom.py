"""DICOM CT series: discovery of files, grouping by SeriesInstanceUID, geometry and slice streaming.

Spec: DICOM PS3.3 C.7.6.2 (Image Plane Module). Headers are read with
``stop_before_pixels=True``; pixels are decoded one slice at a time when a store is written, so
memory stays bounded by one slice. Slices are ordered by their position along the slice normal
(never by InstanceNumber or file name), and every geometric assumption (one orientation, unique
and evenly spaced positions, no tilt) is checked and reported instead of silently stacked.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from verse_etl.errors import InputError
from verse_etl.geometry import dicom_affine

# Geometry tolerances: positions and spacings in mm, direction cosines as dot products.
SPACING_TOLERANCE_MM = 0.01
ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SliceHeader:
    """What one CT image file says about itself (no pixels)."""

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
    attributes: dict[str, object] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SeriesGeometry:
    """A series ordered along its slice normal, with the checks that make it a clean volume."""

    slices: tuple[SliceHeader, ...]
    affine: np.ndarray
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    slice_step_mm: float
    tilt_deg: float
    problems: tuple[str, ...]

    @property
    def is_volume(self) -> bool:
        """True if no geometry check failed."""
        return not self.problems


# Series-level attributes copied to the `series` table. An allow-list: patient name, ids, birth
# date and addresses never leave the DICOM file.
SERIES_ATTRIBUTES: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "KVP",
    "SliceThickness",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "PatientPosition",
    "FrameOfReferenceUID",
)


def read_slice_header(path: Path) -> SliceHeader | None:
    """Read one file's header; return None if it is not a DICOM image.

    Raises
    ------
    InputError
        If the file is DICOM but lacks what a CT slice must have (SeriesInstanceUID, Rows,
        Columns).
    """
    # pydicom converts values lazily on attribute access, so every access stays inside the
    # filter: MosMed UIDs end in '.', invalid for VR UI but real, and are kept verbatim.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError):
            return None
        return _header(path, ds)


def _header(path: Path, ds: pydicom.Dataset) -> SliceHeader | None:
    if "SeriesInstanceUID" not in ds or "Rows" not in ds or "Columns" not in ds:
        if "SeriesInstanceUID" in ds and "Rows" not in ds:
            return None  # e.g. a DICOMDIR or structured report next to the images
        raise InputError(
            path,
            "DICOM file has no SeriesInstanceUID",
            "the file cannot be grouped; remove it or fix its header",
            check="dicom_tags",
        )
    number = ds.get("InstanceNumber")
    return SliceHeader(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        instance_number=int(number) if number not in (None, "") else None,
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=float(ds.get("RescaleSlope", 1) or 1),
        intercept=float(ds.get("RescaleIntercept", 0) or 0),
        image_type=tuple(str(v) for v in (ds.get("ImageType") or ())),
        attributes={k: _plain(ds.get(k)) for k in SERIES_ATTRIBUTES if k in ds},
    )


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        items = tuple(float(v) for v in value)  # type: ignore[union-attr]
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
    if isinstance(value, (int, float, str)):
        return value if not isinstance(value, str) else str(value)
    return str(value)


def scan_folder(folder: Path) -> tuple[dict[str, list[SliceHeader]], list[Path], list[InputError]]:
    """Read every file below ``folder`` (any name, any nesting) and group images by series.

    Returns
    -------
    series
        SeriesInstanceUID -> slice headers (unordered).
    ignored
        Files that are not DICOM images (kept for the record, never silently skipped).
    errors
        DICOM files that could not be used, with the reason.
    """
    series: dict[str, list[SliceHeader]] = defaultdict(list)
    ignored: list[Path] = []
    errors: list[InputError] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            header = read_slice_header(path)
        except InputError as e:
            errors.append(e)
            continue
        if header is None:
            ignored.append(path)
        else:
            series[header.series_uid].append(header)
    return dict(series), ignored, errors


def order_series(
    slices: Sequence[SliceHeader], tolerance_mm: float = SPACING_TOLERANCE_MM
) -> SeriesGeometry:
    """Order a series along its slice normal and check that it is one clean volume.

    Checks (each failure is a string in ``problems``): every slice has position, orientation and
    spacing; one orientation; one matrix size; orthonormal direction cosines; unique positions;
    uniform spacing within ``tolerance_mm``; no gantry tilt (slice step along the normal); at
    least two slices.

    Raises
    ------
    InputError
        If the slices carry too little geometry to order them at all.
    """
    first = slices[0]
    missing = [
        s.path
        for s in slices
        if s.position is None or s.orientation is None or s.pixel_spacing is None
    ]
    if missing:
        raise InputError(
            missing[0],
            f"{len(missing)} slice(s) lack ImagePositionPatient, "
            "ImageOrientationPatient or PixelSpacing",
            "the series cannot be placed in space",
            check="dicom_geometry",
        )
    problems: list[str] = []
    iop = np.asarray(first.orientation, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(float(row_dir @ col_dir)) > 1e-3
    ):
        problems.append(f"orientation is not orthonormal (got {iop.round(5).tolist()})")
    if any(np.max(np.abs(np.asarray(s.orientation) - iop)) > ORIENTATION_TOLERANCE for s in slices):
        problems.append("slices have more than one orientation (mixed series or localizer)")
    if len({(s.rows, s.columns) for s in slices}) > 1:
        problems.append("slices have more than one matrix size")
    if len({s.pixel_spacing for s in slices}) > 1:
        problems.append("slices have more than one PixelSpacing")
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal) or 1.0
    ordered = sorted(slices, key=lambda s: float(np.dot(s.position, normal)))  # type: ignore[arg-type]
    positions = np.asarray([s.position for s in ordered], dtype=float)
    along = positions @ normal
    steps = np.diff(along)
    if len(ordered) < 2:
        problems.append(f"only {len(ordered)} slice: not a volume")
        step_vec = normal * float(first.pixel_spacing[0])  # type: ignore[index]
        step = 0.0
        tilt = 0.0
    else:
        if np.any(steps < tolerance_mm):
            problems.append("duplicate slice positions")
        step = float(np.median(steps))
        if step > 0 and np.max(np.abs(steps - step)) > max(tolerance_mm, 0.01 * step):
            gaps = int(np.sum(steps > 1.5 * step))
            detail = f", {gaps} gap(s) (missing slices)" if gaps else ""
            problems.append(
                f"slice spacing is not uniform (median {step:.4f} mm, "
                f"range {steps.min():.4f}..{steps.max():.4f} mm{detail})"
            )
        step_vec = (positions[-1] - positions[0]) / (len(ordered) - 1)
        cos = abs(float(step_vec @ normal)) / (np.linalg.norm(step_vec) or 1.0)
        tilt = float(np.degrees(np.arccos(min(1.0, cos))))
        if tilt > 0.1:
            problems.append(f"gantry tilt of {tilt:.2f} degrees (slices are sheared)")
    ps = first.pixel_spacing  # type: ignore[assignment]
    affine = dicom_affine(iop, ordered[0].position, ps, step_vec)  # type: ignore[arg-type]
    return SeriesGeometry(
        slices=tuple(ordered),
        affine=affine,
        shape=(first.rows, first.columns, len(ordered)),
        spacing_mm=(float(ps[0]), float(ps[1]), float(np.linalg.norm(step_vec))),  # type: ignore[index]
        slice_step_mm=step,
        tilt_deg=tilt,
        problems=tuple(problems),
    )


def read_slice_hu(header: SliceHeader) -> np.ndarray:
    """Decode one slice and return Hounsfield units as an int16 ``[row, column]`` array.

    Raises
    ------
    InputError
        If the pixel data is missing or undecodable, or the rescaled values are not exact
        integers within int16 (they would be silently rounded or clipped).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(header.path)
            pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken or unsupported pixel data
        raise InputError(
            header.path,
            f"cannot decode pixel data ({type(e).__name__}: {e})",
            "the file is corrupt or its transfer syntax needs a decoder plugin",
            check="dicom_pixels",
        ) from e
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
    if hu.min() < -32768 or hu.max() > 32767:
        raise InputError(
            header.path,
            f"HU range {hu.min()}..{hu.max()} does not fit int16",
            "check the rescale tags",
            check="dicom_rescale",
        )
    return hu.astype(np.int16)


class SeriesReader:
    """Decode a series' slices in position order straight into arrays the caller owns.

    The zero-copy way to stream a series into a Zarr writer's staging rows (see
    :meth:`verse_etl.volumes.StoreWriter.write_array`); :func:`iter_series_slabs` allocates a
    slab per step that the writer then copies.
    """

    dtype = np.dtype(np.int16)

    def __init__(self, geometry: SeriesGeometry) -> None:
        self.geometry = geometry
        self.position = 0  # slices read so far

    def read_into(self, out: np.ndarray) -> None:
        """Fill ``out`` (``(rows, columns, k)`` int16) with the HU of the next ``k`` slices.

        Raises
        ------
        InputError
            As :func:`read_slice_hu` for a slice that cannot be decoded exactly.
        """
        rows, cols, n = self.geometry.shape
        k = out.shape[2]
        if out.shape[:2] != (rows, cols) or self.position + k > n or out.dtype != self.dtype:
            raise ValueError(f"cannot read {out.shape} {out.dtype} at slice {self.position}")
        for m, header in enumerate(self.geometry.slices[self.position : self.position + k]):
            out[:, :, m] = read_slice_hu(header)
        self.position += k


def iter_series_slabs(geometry: SeriesGeometry, depth: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(k0, slab)`` with ``slab[:, :, n]`` the HU of position-sorted slice ``k0 + n``."""
    rows, cols, n = geometry.shape
    for k0 in range(0, n, depth):
        chunk = geometry.slices[k0 : k0 + depth]
        slab = np.empty((rows, cols, len(chunk)), dtype=np.int16, order="F")
        for m, header in enumerate(chunk):
            slab[:, :, m] = read_slice_hu(header)
        yield k0, slab
