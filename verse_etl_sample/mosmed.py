"""Synthetic MosMed CTLungCa-500 studies with v1 vertebral keypoint annotations.

Spec: ``shared/specs/MOSMED.md`` §1 (annotation v1), §3.2 (layout), §3.4 (tags) and §5
(synthetic-fixture recipe). A study is::

    <out>/mosmed/dicom/<Folder>/<XXXXXXXX>/<YYYYYYYY>/<ZZZZZZZZ>    (no extension, two leaf dirs)
    <out>/mosmed/annotation/<Folder>.json        v1 keypoints
    <out>/mosmed/annotation_v2/<Folder>.json     v2 keypoints with levels (same identifiers)

holding a thin annotated series and a thick (5 mm) decoy series with its own SeriesInstanceUID
and the same StudyInstanceUID, files of both mixed in the same folders under random names.

Geometry of every series: axial, ImageOrientationPatient [1,0,0,0,1,0] (row index grows towards
posterior, column index towards the patient's left), InstanceNumber 1..N from head to feet with
ImagePositionPatient z = z0 - (n - 1) * spacing. An annotation point ``[row, col, k]`` indexes
``image[row, col, k]`` with ``k`` the 0-based position in InstanceNumber order. The voxel ->
world (RAS+) affine of that array is::

    [[0,   -dc, 0,   -x0],      x_RAS = -(x0 + col * dc)
     [-dr,  0,  0,   -y0],      y_RAS = -(y0 + row * dr)
     [0,    0,  -dz,  z0],      z_RAS =  z0 - k * dz
     [0,    0,  0,    1]]

where (x0, y0, z0) is the ImagePositionPatient (LPS) of instance 1 and PixelSpacing = [dr, dc].
"""

from __future__ import annotations

import bisect
import copy
import json
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RLELossless,
)

from verse_etl_sample.manifest import MosmedStudyManifest, MosmedVertebraManifest
from verse_etl_sample.output import write_bytes_atomic, write_text_atomic
from verse_etl_sample.phantom import (
    FractureType,
    Phantom,
    Trunk,
    Vertebra,
    build_phantom,
    build_spine,
    iter_slabs,
    spine_labels,
    world_to_voxel,
)
from verse_etl_sample.rle import encode_frame

UID_ROOT = "1.2.643.5.1.13.13.12.2.77.8252"
"""Root of the re-generated MosMed UIDs (MOSMED.md §1.5, §3.4)."""

TRANSFER_SYNTAXES: dict[str, str] = {"explicit": ExplicitVRLittleEndian, "rle": RLELossless}
IMPLEMENTATION_VERSION = "VERSE_ETL_SMPL"
DECOY_SPACING_MM = 5.0
NOISE_HU = 10.0
POINT_ORDER = ("ant_sup", "ant_inf", "mid_sup", "mid_inf", "post_sup", "post_inf")

# (Manufacturer, ManufacturerModelName, thin kernel, thick kernel, KVP)
SCANNERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("TOSHIBA", "Aquilion", "FC07", "FC13", "120"),
    ("SIEMENS", "SOMATOM Definition AS", "B70f", "B31f", "120"),
    ("GE MEDICAL SYSTEMS", "Optima CT660", "LUNG", "STANDARD", "120"),
    ("Philips", "Ingenuity CT", "YB", "B", "120"),
)

# Thin-series grid per size: matrix, PixelSpacing (None = drawn from the real 0.62-0.78 mm
# range), slice spacing, SliceThickness.
GRIDS: dict[str, tuple[int, float | None, float, float]] = {
    "tiny": (64, 3.0, 2.5, 2.5),
    "small": (128, 2.0, 1.6, 2.0),
    "real": (512, None, 0.8, 1.0),
}
REAL_PIXEL_SPACINGS = (0.625, 0.68359375, 0.703125, 0.7421875, 0.78125)


def _digits(rng: np.random.Generator, n: int, *, leading_zero: bool | None = None) -> str:
    """``n`` random decimal digits; ``leading_zero`` forces (True) or forbids (False) a 0 first."""
    d = rng.integers(0, 10, size=n)
    if leading_zero is True:
        d[0] = 0
    elif leading_zero is False and d[0] == 0:
        d[0] = int(rng.integers(1, 10))
    return "".join(str(int(x)) for x in d)


def real_style_series_uid(rng: np.random.Generator, *, leading_zero: bool = False) -> str:
    """A SeriesInstanceUID shaped like the real ones: 63 characters ending in ``'.'``.

    Parameters
    ----------
    rng
        Seeded generator.
    leading_zero
        Start the second component with a 0, as 14/100 real UIDs have a component with a
        leading zero (both invalid for VR UI; pydicom warns but keeps them).

    Returns
    -------
    str
        ``1.2.643.5.1.13.13.12.2.77.8252.<15 digits>.<15 digits>.``
    """
    return f"{UID_ROOT}.{_digits(rng, 15)}.{_digits(rng, 15, leading_zero=leading_zero)}."


def _not_invalid_uid(record: logging.LogRecord) -> bool:
    return "Invalid value for VR UI" not in record.getMessage()


@contextmanager
def allow_invalid_uids() -> Iterator[None]:
    """Silence pydicom's warning about the real UIDs' trailing '.', here only.

    pydicom's default WARN validation mode stays in force (RAISE would refuse the value). It
    reports through both :mod:`warnings` and its ``pydicom`` logger; both are filtered for this
    one message while the block runs.
    """
    logger = logging.getLogger("pydicom")
    logger.addFilter(_not_invalid_uid)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Invalid value for VR UI", category=UserWarning
            )
            yield
    finally:
        logger.removeFilter(_not_invalid_uid)


@dataclass(frozen=True)
class SeriesPlan:
    """Geometry and identity of one axial CT series."""

    series_uid: str
    series_number: int
    description: str
    rows: int
    columns: int
    n_slices: int
    pixel_spacing: float
    slice_spacing: float
    slice_thickness: float
    origin_lps: tuple[float, float, float]
    kernel: str
    window: tuple[str, str]

    def affine(self) -> np.ndarray:
        """4x4 (row, col, k) -> RAS+ mm of the InstanceNumber-ordered array (see module doc)."""
        x0, y0, z0 = self.origin_lps
        d = self.pixel_spacing
        return np.array(
            [
                [0.0, -d, 0.0, -x0],
                [-d, 0.0, 0.0, -y0],
                [0.0, 0.0, -self.slice_spacing, z0],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )

    def z(self, k: int) -> float:
        """ImagePositionPatient z of 0-based slice ``k`` (InstanceNumber ``k + 1``)."""
        return round(self.origin_lps[2] - k * self.slice_spacing, 4)


@dataclass(frozen=True)
class StudyPlan:
    """Identity and scanner of one study (shared by its series)."""

    folder: str
    study_uid: str
    frame_uid: str
    token: str
    patient_id: str
    accession: str
    manufacturer: str
    model: str
    kvp: str
    signed: bool
    transfer_syntax: str


def _ds(value: float) -> str:
    """Decimal String of at most 16 characters, exact for the values used here."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _base_dataset(study: StudyPlan, series: SeriesPlan) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = "20180315"
    ds.SeriesDate = "20180315"
    ds.StudyTime = "101500"
    ds.SeriesTime = "101500"
    ds.AccessionNumber = study.accession
    ds.Modality = "CT"
    ds.Manufacturer = study.manufacturer
    # Obviously fake identifying values: PHI tests look for them in every output.
    ds.InstitutionName = "ANON SAMPLE CLINIC"
    ds.ReferringPhysicianName = "ANON^REFERRER"
    ds.StudyDescription = "CT CHEST LOW DOSE"
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = study.model
    ds.PatientName = "ANON^SAMPLE"
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19000101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = _ds(series.slice_thickness)
    ds.KVP = study.kvp
    ds.GantryDetectorTilt = "0"
    ds.ConvolutionKernel = series.kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series.series_number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = study.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = series.rows
    ds.Columns = series.columns
    ds.PixelSpacing = [_ds(series.pixel_spacing), _ds(series.pixel_spacing)]
    ds.BitsAllocated = 16
    if study.signed:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        ds.RescaleIntercept = "0"
    else:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.RescaleIntercept = "-1024"
    ds.WindowCenter, ds.WindowWidth = series.window
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = UID(study.transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    return ds


def _pixels(hu: np.ndarray, signed: bool) -> np.ndarray:
    """Stored pixel values of an HU slice (int16, already clipped to -1024..3071)."""
    hu = np.ascontiguousarray(hu, dtype=np.int16)
    # -1024..3071 + 1024 stays inside int16, so the unsigned view is exact and copy-free.
    return hu if signed else (hu + np.int16(1024)).view(np.uint16)


# Elements that change from slice to slice, in tag order; everything else is encoded once.
_PER_SLICE_TAGS = (0x00080018, 0x00200013, 0x00200032, 0x00201041, 0x7FE00010)


def _explicit_le() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    return fp


class SliceEncoder:
    """Encode the files of one series fast, byte-identical to ``dcmwrite(enforce_file_format)``.

    ``pydicom.dcmwrite`` re-encodes some 60 elements per file; here the elements shared by all
    slices are encoded once, between the few that change (SOPInstanceUID, InstanceNumber,
    ImagePositionPatient, SliceLocation, PixelData), and spliced around them. Both transfer
    syntaxes used are explicit VR little endian, so chunks are position-independent.

    Parameters
    ----------
    base
        The series' dataset without the per-slice elements, with ``file_meta`` set.
    """

    def __init__(self, base: Dataset) -> None:
        self.meta = copy.deepcopy(base.file_meta)
        self.compressed = UID(self.meta.TransferSyntaxUID).is_compressed
        groups = [Dataset() for _ in range(len(_PER_SLICE_TAGS) + 1)]
        for elem in base:
            if int(elem.tag) in _PER_SLICE_TAGS:
                raise ValueError(f"base dataset must not hold per-slice element {elem.tag}")
            groups[bisect.bisect(_PER_SLICE_TAGS, int(elem.tag))].add(elem)
        self.chunks = []
        for g in groups:
            fp = _explicit_le()
            write_dataset(fp, g)
            self.chunks.append(fp.getvalue())

    def encode(
        self,
        *,
        sop_instance_uid: str,
        instance_number: int,
        position: list[str],
        pixel_data: bytes,
    ) -> bytes:
        """The whole file (preamble, file meta, dataset) of one slice.

        ``pixel_data`` is native little-endian pixel bytes, or one encapsulated frame
        (:func:`pydicom.encaps.encapsulate`) for a compressed transfer syntax.
        """
        per_slice = Dataset()
        per_slice.SOPInstanceUID = sop_instance_uid
        per_slice.InstanceNumber = instance_number
        per_slice.ImagePositionPatient = position
        per_slice.SliceLocation = position[2]
        per_slice.PixelData = pixel_data
        elem = per_slice["PixelData"]
        elem.VR = "OB" if self.compressed else "OW"
        elem.is_undefined_length = self.compressed
        self.meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
        fp = _explicit_le()
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, self.meta, enforce_standard=True)
        for chunk, tag in zip(self.chunks, _PER_SLICE_TAGS, strict=False):
            fp.write(chunk)
            write_data_element(fp, per_slice[tag])
        fp.write(self.chunks[-1])
        return fp.getvalue()


def _pixel_data(pixels: np.ndarray, transfer_syntax: str) -> bytes:
    if transfer_syntax == RLELossless:
        return encapsulate([encode_frame(pixels)])
    return pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()


_NAME_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


def _name(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(_NAME_ALPHABET, size=8))
        if name not in taken:
            taken.add(name)
            return name


def write_study(
    dicom_root: Path,
    study: StudyPlan,
    series_list: list[SeriesPlan],
    phantom: Phantom,
    rng: np.random.Generator,
    *,
    noise_hu: float = 0.0,
    depth: int = 16,
) -> dict[str, list[Path]]:
    """Write every series of one study as single-frame CT files.

    Files get random 8-character names without extension in two random leaf folders
    (``<Folder>/<top>/<leaf>/<name>``); within each slab of ``depth`` slices they are written in
    shuffled order, so neither file names nor creation order give the slice order.

    Parameters
    ----------
    dicom_root
        ``<out>/mosmed/dicom``.
    study
        Study identity; ``study.folder`` names the study folder.
    series_list
        Series to write (same phantom, each on its own grid).
    phantom
        What the images show.
    rng
        Generator owned by the study (names, shuffling, noise).
    noise_hu
        Gaussian noise (0 keeps RLE output small).
    depth
        Slices evaluated at once.

    Returns
    -------
    dict
        SeriesInstanceUID -> paths in InstanceNumber order.
    """
    taken: set[str] = set()
    top = dicom_root / study.folder / _name(rng, taken)
    leaves = [top / _name(rng, taken), top / _name(rng, taken)]
    written: dict[str, list[Path]] = {}
    with allow_invalid_uids():
        for series in series_list:
            encoder = SliceEncoder(_base_dataset(study, series))
            shape = (series.rows, series.columns, series.n_slices)
            x0, y0, _ = series.origin_lps
            paths = [
                leaves[int(rng.integers(2))] / _name(rng, taken) for _ in range(series.n_slices)
            ]
            for slab in iter_slabs(
                phantom, shape, series.affine(), depth=depth, noise_hu=noise_hu, rng=rng
            ):
                # One copy per slab makes every slice contiguous: (depth, rows, columns).
                slices = np.ascontiguousarray(np.moveaxis(slab.hu, 2, 0))
                for kk in rng.permutation(slab.hu.shape[2]):
                    k = slab.k0 + int(kk)
                    pixels = _pixels(slices[kk], study.signed)
                    data = encoder.encode(
                        sop_instance_uid=f"{UID_ROOT}.{study.token}.{series.series_number}.{k + 1}",
                        instance_number=k + 1,
                        position=[_ds(x0), _ds(y0), _ds(series.z(k))],
                        pixel_data=_pixel_data(pixels, study.transfer_syntax),
                    )
                    write_bytes_atomic(paths[k], data)
            written[series.series_uid] = paths
    return written


def thin_and_decoy(
    *,
    series_uid: str,
    decoy_uid: str,
    rows: int,
    pixel_spacing: float,
    slice_spacing: float,
    slice_thickness: float,
    n_slices: int,
    fov_centre_ras: tuple[float, float],
    z0: float,
    kernels: tuple[str, str],
) -> tuple[SeriesPlan, SeriesPlan]:
    """The annotated thin series and its 5 mm decoy over the same z range.

    ``fov_centre_ras`` is the RAS (x, y) of the image centre; ``z0`` the z of instance 1.
    """
    half = (rows - 1) / 2 * pixel_spacing
    x0 = round(-fov_centre_ras[0] - half, 4)
    y0 = round(-fov_centre_ras[1] - half, 4)
    thin = SeriesPlan(
        series_uid=series_uid,
        series_number=2,
        description=f"LUNG {_ds(slice_thickness)} mm",
        rows=rows,
        columns=rows,
        n_slices=n_slices,
        pixel_spacing=pixel_spacing,
        slice_spacing=slice_spacing,
        slice_thickness=slice_thickness,
        origin_lps=(x0, y0, z0),
        kernel=kernels[0],
        window=("-600", "1500"),
    )
    span = (n_slices - 1) * slice_spacing
    decoy = SeriesPlan(
        series_uid=decoy_uid,
        series_number=3,
        description=f"BODY {_ds(DECOY_SPACING_MM)} mm",
        rows=rows,
        columns=rows,
        n_slices=math.floor(span / DECOY_SPACING_MM) + 1,
        pixel_spacing=pixel_spacing,
        slice_spacing=DECOY_SPACING_MM,
        slice_thickness=DECOY_SPACING_MM,
        origin_lps=(x0, y0, z0),
        kernel=kernels[1],
        window=("40", "400"),
    )
    return thin, decoy


def annotation_json(folder: str, series_uid: str, experts: dict[str, list[np.ndarray]]) -> str:
    """Serialise a v1 annotation exactly like the real files (indent 2, no final newline).

    Parameters
    ----------
    folder, series_uid
        Study identity.
    experts
        Expert key -> list of (6, 3) arrays ``[row, col, k]``, cranial first, file order kept.

    Returns
    -------
    str
    """
    data = {
        "Folder": folder,
        "SeriesInstanceUID": series_uid,
        "Annotation": {
            key: [[[float(c) for c in p] for p in np.asarray(v)] for v in verts]
            for key, verts in experts.items()
        },
    }
    return json.dumps(data, indent=2)


def v2_label(level: str) -> str:
    """The v2 annotation's ``type`` of a level name (thoracic written ``Th``).

    Examples
    --------
    >>> v2_label("T7"), v2_label("L1"), v2_label("C4")
    ('Th7', 'L1', 'C4')
    """
    return "Th" + level[1:] if level.startswith("T") else level


def annotation_v2_json(
    folder: str, series_uid: str, experts: dict[str, list[tuple[np.ndarray, str]]]
) -> str:
    """Serialise a v2 (labelled) annotation like neuro-ml/anchor-free-genant's files.

    Parameters
    ----------
    folder, series_uid
        Study identity (the same as in the v1 file).
    experts
        Expert key -> list of ``((6, 3) points [row, col, k], v2 type label)``, cranial first.

    Returns
    -------
    str
        ``{"Folder", "SeriesInstanceUID", "Annotation": {expert: [{"segments": [[ant_sup,
        ant_inf], [mid_sup, mid_inf], [post_sup, post_inf]], "type": "Th7"}, ...]}}``.
    """
    data = {
        "Folder": folder,
        "SeriesInstanceUID": series_uid,
        "Annotation": {
            key: [
                {
                    "segments": np.asarray(points, dtype=float).reshape(3, 2, 3).tolist(),
                    "type": label,
                }
                for points, label in verts
            ]
            for key, verts in experts.items()
        },
    }
    return json.dumps(data, indent=2)


def _v2_experts(
    v1: dict[str, list[np.ndarray]],
    chosen: dict[str, list[int]],
    levels: list[str],
    vertebrae: list[Vertebra],
    affine: np.ndarray,
    rng: np.random.Generator,
    *,
    pixel_spacing: float,
    slice_spacing: float,
) -> dict[str, list[tuple[np.ndarray, str]]]:
    """The labelled re-annotation: the first v1 reader again (most vertebrae copied unchanged,
    a few re-read) and one new reader; both stop one vertebra before the v1 readers, so that the
    most caudal v1 vertebra has no labelled counterpart.

    As in the real releases the readers are renumbered: the first v1 reader comes back under a
    key no v1 reader has, and the new reader takes the first reader's old key when v2 allows it
    (expert1..expert4), so that pairing readers by key gets them wrong. The re-reader is the
    first key of the result."""
    first = next(iter(v1))
    known = {int(k.removeprefix("expert")) for k in v1}
    again_key = next(f"expert{e}" for e in range(1, 5) if e not in known)
    new = (
        first
        if int(first[6:]) in range(1, 5)
        else next(f"expert{e}" for e in range(1, 5) if e not in known | {int(again_key[6:])})
    )
    out: dict[str, list[tuple[np.ndarray, str]]] = {}
    n = len(vertebrae) - 1
    reread = set(rng.choice(n, size=max(1, n // 3), replace=False).tolist())
    again = []
    for j, i in enumerate(chosen[first][:n]):
        points = v1[first][j]
        if i in reread:
            points = _expert_points(
                [vertebrae[i]],
                affine,
                rng,
                pixel_spacing=pixel_spacing,
                slice_spacing=slice_spacing,
            )[0]
        again.append((points, v2_label(levels[i])))
    out[again_key] = again
    fresh = _expert_points(
        vertebrae[:n], affine, rng, pixel_spacing=pixel_spacing, slice_spacing=slice_spacing
    )
    out[new] = [(p, v2_label(levels[i])) for i, p in enumerate(fresh)]
    return out


def _folder_name(index: int, rng: np.random.Generator) -> str:
    """A study folder name in one of the real patterns (MOSMED.md §1.5), sample-looking."""
    kind = index % 3
    if kind == 0:
        return f"RLADD0900{_digits(rng, 7)}_RLSDD0900{_digits(rng, 7)}"
    a = f"RLAD{_digits(rng, 2)}D{_digits(rng, 3)}-{_digits(rng, 5)}"
    if kind == 1:
        return f"{a}_{a.replace('RLAD', 'RLSD', 1)}"
    return f"{a}_RLS6A{_digits(rng, 5)}SVR_{_digits(rng, 7)}"


def study_plan(
    folder: str, number: int, rng: np.random.Generator, *, signed: bool, transfer_syntax: str
) -> tuple[StudyPlan, tuple[str, str]]:
    """Identity and scanner of a study; returns the plan and its (thin, thick) kernels.

    ``number`` goes into the fake PatientID (``ANON-SAMPLE-<number>``) and AccessionNumber.
    """
    token = _digits(rng, 12, leading_zero=False)
    manufacturer, model, kernel_thin, kernel_thick, kvp = SCANNERS[int(rng.integers(len(SCANNERS)))]
    plan = StudyPlan(
        folder=folder,
        study_uid=f"{UID_ROOT}.{token}",
        frame_uid=f"{UID_ROOT}.{token}.9",
        token=token,
        patient_id=f"ANON-SAMPLE-{number:04d}",
        accession=f"ANONACC{number:06d}",
        manufacturer=manufacturer,
        model=model,
        kvp=kvp,
        signed=signed,
        transfer_syntax=TRANSFER_SYNTAXES[transfer_syntax],
    )
    return plan, (kernel_thin, kernel_thick)


def _pick_fractures(
    rng: np.random.Generator, kinds: tuple[FractureType, ...]
) -> dict[int, tuple[FractureType, float]]:
    """Distinct, non-adjacent levels between T4 and L1 for the given fracture kinds."""
    candidates = list(range(11, 21))  # T4 .. L1
    chosen: list[int] = []
    while len(chosen) < len(kinds):
        label = int(rng.choice(candidates))
        if all(abs(label - c) >= 2 for c in chosen):
            chosen.append(label)
    ratios = {"wedge": (0.58, 0.68), "crush": (0.65, 0.72), "biconcave": (0.6, 0.7)}
    return {
        label: (kind, float(rng.uniform(*ratios[kind])))
        for label, kind in zip(chosen, kinds, strict=True)
    }


def _expert_points(
    vertebrae: list[Vertebra],
    affine: np.ndarray,
    rng: np.random.Generator,
    *,
    pixel_spacing: float,
    slice_spacing: float,
) -> list[np.ndarray]:
    """One expert's keypoints ``[row, col, k]``: truth plus small reader noise.

    Rows and slices move by about 0.6 mm; the column (the sagittal slice the reader worked
    on) is an integer, constant within a vertebra, sometimes one off the true plane.
    """
    out = []
    for v in vertebrae:
        vox = world_to_voxel(affine, v.keypoints)
        col = float(np.rint(vox[:, 1].mean()) + rng.choice([-1, 0, 0, 0, 1]))
        rows = vox[:, 0] + rng.normal(0, 0.6 / pixel_spacing, size=6)
        ks = vox[:, 2] + rng.normal(0, 0.6 / slice_spacing, size=6)
        out.append(np.column_stack([rows, np.full(6, col), ks]))
    return out


def rounded_heights(heights: tuple[float, float, float]) -> tuple[float, float, float]:
    """Heights rounded to 1 micrometre, for manifests."""
    return round(heights[0], 3), round(heights[1], 3), round(heights[2], 3)


def write_mosmed_sample_study(
    out: Path,
    index: int,
    *,
    size: str,
    rng: np.random.Generator,
    transfer_syntax: str = "explicit",
) -> tuple[MosmedStudyManifest, list[Path]]:
    """Write one synthetic study (thin annotated series, decoy, annotation file).

    Study 1 (the second) stores signed pixels with RescaleIntercept 0; the others are unsigned
    with RescaleIntercept -1024. Study 0 has three experts, one of whom skipped the most caudal
    vertebra; the others alternate two and three experts. Every study has a wedge and a crush
    fracture; even-numbered studies also a biconcave one. A labelled v2 annotation
    (``annotation_v2/<Folder>.json``) re-reads the study with the first v1 expert and one new
    expert, down to the vertebra above the most caudal one.

    Parameters
    ----------
    out
        Sample root; files go below ``out / "mosmed"``.
    index
        Study number (drives name pattern, signedness, fractures).
    size
        ``"tiny"``, ``"small"`` or ``"real"`` (see :data:`GRIDS`).
    rng
        Generator owned by this study.
    transfer_syntax
        ``"explicit"`` (Explicit VR Little Endian) or ``"rle"`` (RLE Lossless).

    Returns
    -------
    manifest : MosmedStudyManifest
    files : list of Path
        Absolute paths written.
    """
    rows, spacing, dz, thickness = GRIDS[size]
    pixel_spacing = spacing if spacing is not None else float(rng.choice(REAL_PIXEL_SPACINGS))
    folder = _folder_name(index, rng)
    signed = index == 1
    study, kernels = study_plan(folder, index, rng, signed=signed, transfer_syntax=transfer_syntax)
    series_uid = real_style_series_uid(rng, leading_zero=index == 0)
    decoy_uid = real_style_series_uid(rng)

    kinds: tuple[FractureType, ...] = (
        ("wedge", "crush", "biconcave") if index % 2 == 0 else ("wedge", "crush")
    )
    fractures = _pick_fractures(rng, kinds)
    anchor = np.array([rng.uniform(-6, 6), rng.uniform(-60, -40), rng.uniform(-260, -180)])
    vertebrae = build_spine(
        spine_labels(),
        top=np.zeros(3),
        rng=rng,
        fractures=fractures,
        curvature=rng.uniform(0.7, 1.0),
        anchor=(14, anchor),
    )
    by_label = {v.label: v for v in vertebrae}
    spine_y = float(np.median([by_label[lab].centroid[1] for lab in range(8, 21)]))
    trunk = Trunk(
        center_xy=(float(anchor[0]), spine_y + 55.0),
        lungs_z=(float(by_label[18].centroid[2]), float(by_label[8].centroid[2]) + 25.0),
    )
    shell_mm = float(np.clip(0.6 * max(pixel_spacing, dz), 1.2, 3.0))
    phantom = build_phantom(vertebrae, trunk, shell_mm=shell_mm)

    # Slices from 20 mm above T1 to 15 mm below L1, head first.
    annotated = [by_label[lab] for lab in range(8, 21)]  # T1 .. L1
    z_top = float(annotated[0].keypoints[:, 2].max()) + 20.0
    z_bottom = float(annotated[-1].keypoints[:, 2].min()) - 15.0
    n_slices = math.ceil((z_top - z_bottom) / dz) + 1
    fov = rows * pixel_spacing
    fov_centre = (float(anchor[0]), spine_y + min(55.0, fov / 2 - 70.0))
    thin, decoy = thin_and_decoy(
        series_uid=series_uid,
        decoy_uid=decoy_uid,
        rows=rows,
        pixel_spacing=pixel_spacing,
        slice_spacing=dz,
        slice_thickness=thickness,
        n_slices=n_slices,
        fov_centre_ras=fov_centre,
        z0=round(z_top, 1),
        kernels=kernels,
    )

    dicom_root = out / "mosmed" / "dicom"
    written = write_study(dicom_root, study, [thin, decoy], phantom, rng, noise_hu=NOISE_HU)

    affine = thin.affine()
    n_experts = 3 if index % 2 == 0 else 2
    keys = [f"expert{int(e)}" for e in rng.choice(7, size=n_experts, replace=False)]
    experts: dict[str, list[np.ndarray]] = {}
    expert_indices: list[tuple[str, tuple[int, ...]]] = []
    for e, key in enumerate(keys):
        chosen = list(range(len(annotated)))
        if index == 0 and e == 1:
            chosen = chosen[:-1]  # this reader stopped one vertebra early
        experts[key] = _expert_points(
            [annotated[i] for i in chosen],
            affine,
            rng,
            pixel_spacing=pixel_spacing,
            slice_spacing=dz,
        )
        expert_indices.append((key, tuple(chosen)))
    annotation_path = out / "mosmed" / "annotation" / f"{folder}.json"
    write_text_atomic(annotation_path, annotation_json(folder, series_uid, experts))
    # The labelled release (v2) of the same study: same file name, Folder and UID.
    v2_experts = _v2_experts(
        experts,
        {key: list(chosen) for key, chosen in expert_indices},
        [v.level for v in annotated],
        annotated,
        affine,
        rng,
        pixel_spacing=pixel_spacing,
        slice_spacing=dz,
    )
    annotation_v2_path = out / "mosmed" / "annotation_v2" / f"{folder}.json"
    write_text_atomic(annotation_v2_path, annotation_v2_json(folder, series_uid, v2_experts))

    manifest = MosmedStudyManifest(
        folder=folder,
        series_uid=series_uid,
        decoy_series_uid=decoy_uid,
        study_uid=study.study_uid,
        annotation=annotation_path.relative_to(out),
        files=tuple(p.relative_to(out) for p in written[series_uid]),
        decoy_files=tuple(p.relative_to(out) for p in written[decoy_uid]),
        rows=rows,
        columns=rows,
        n_slices=n_slices,
        pixel_spacing_mm=pixel_spacing,
        slice_spacing_mm=dz,
        signed=signed,
        transfer_syntax=study.transfer_syntax,
        vertebrae=tuple(
            MosmedVertebraManifest(
                label=v.label,
                level=v.level,
                fracture=v.fracture,
                heights_mm=rounded_heights(v.heights_mm()),
            )
            for v in annotated
        ),
        experts=tuple(expert_indices),
        annotation_v2=annotation_v2_path.relative_to(out),
        v2_experts=tuple((key, tuple(range(len(verts)))) for key, verts in v2_experts.items()),
        same_readers=((expert_indices[0][0], next(iter(v2_experts))),),
    )
    files = [p for paths in written.values() for p in paths] + [annotation_path, annotation_v2_path]
    return manifest, files
