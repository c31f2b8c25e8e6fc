"""Export a build's volumes for the tools people train with: NIfTI-1 files (``.nii.gz``) with the
source affine, and an nnU-Net v2 raw dataset.

Spec: NIfTI-1 (https://nifti.nimh.nih.gov/nifti-1/), nnU-Net v2 dataset format
(https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/dataset_format.md).

Volumes are streamed from the Zarr stores one chunk-deep slab at a time, back in the source's
voxel order (the stores hold the source grid permuted and flipped, :mod:`verse_etl.geometry.store_frame`):
a slab of the file's last axis, its slowest, is a chunk row along one store axis, so each slab
is a contiguous run of the file and memory stays bounded whatever the scan size. The header is written here (348 bytes + an empty extension flag, as nibabel writes
it) so that only numpy, zarr and pyarrow are needed: a light install exports. The affine goes to
the sform (``sform_code`` 2, aligned; ``qform_code`` 0), which NIfTI keeps as float32: VerSe
affines, read from NIfTI, come back exactly; DICOM-derived (MosMed) ones to float32 precision.
Every file appears at its final name only when complete.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verse_etl.dataset import Case, Dataset
from verse_etl.errors import InputError, ParamsError
from verse_etl.geometry.store_frame import StoreFrame
from verse_etl.io.atomic import atomic_file, gzip_member, write_text_atomic
from verse_etl.levels import VERSE_LEVELS, VERTEBRA_LABELS

_NIFTI_TYPES: dict[str, int] = {
    "uint8": 2,
    "int16": 4,
    "int32": 8,
    "float32": 16,
    "float64": 64,
    "int8": 256,
    "uint16": 512,
}
"""NIfTI-1 ``datatype`` codes of the dtypes the stores hold."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def nifti1_header(shape: Sequence[int], dtype: np.dtype, affine: np.ndarray) -> bytes:
    """The 348-byte NIfTI-1 header plus the 4-byte empty extension flag of a single ``.nii``
    file holding a 3-D ``dtype`` array in Fortran order, voxel -> world given by ``affine``.

    Examples
    --------
    >>> header = nifti1_header((4, 5, 6), np.dtype("int16"), np.diag([-0.5, 0.5, 2.0, 1.0]))
    >>> len(header), header[344:348], struct.unpack_from("<8h", header, 40)[:4]
    (352, b'n+1\\x00', (3, 4, 5, 6))
    """
    dtype = np.dtype(dtype)
    if dtype.name not in _NIFTI_TYPES:
        raise ValueError(
            f"no NIfTI-1 datatype for {dtype} (expected one of {sorted(_NIFTI_TYPES)})"
        )
    a = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    h[38:39] = b"r"
    struct.pack_into("<8h", h, 40, 3, *(int(n) for n in shape), 1, 1, 1, 1)
    struct.pack_into("<hhh", h, 70, _NIFTI_TYPES[dtype.name], dtype.itemsize * 8, 0)
    struct.pack_into("<8f", h, 76, 1.0, *spacing, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<fff", h, 108, 352.0, 1.0, 0.0)  # vox_offset, scl_slope, scl_inter
    h[123] = 2  # xyzt_units: millimetres
    struct.pack_into("<hh", h, 252, 0, 2)  # qform_code unknown, sform_code aligned
    struct.pack_into("<12f", h, 280, *a[:3].ravel())
    h[344:348] = b"n+1\x00"
    return bytes(h)


def _slabs(
    array: Any, frame: StoreFrame, lut: np.ndarray | None, allowed: np.ndarray | None
) -> Iterator[np.ndarray]:
    """The source's slabs along its last axis (source axis order), read from the store."""
    axis = frame.stream_axis
    depth = int(array.chunks[axis])
    for k0 in range(0, frame.shape[2], depth):
        lo, hi = frame.store_range(k0, min(depth, frame.shape[2] - k0))
        where = [slice(None)] * 3
        where[axis] = slice(lo, hi)
        slab = frame.to_source(np.asarray(array[tuple(where)]))
        if allowed is not None and not allowed[slab].all():
            found = sorted(int(v) for v in np.unique(slab[~allowed[slab]]))
            raise InputError(
                str(getattr(array, "store_path", array)),
                f"voxel values {found} outside the label map (slices {k0}..{k0 + depth - 1})",
                "export only labels of the VerSe map",
                check="export",
            )
        yield lut[slab] if lut is not None else slab


def write_nifti(
    path: Path,
    array: Any,
    affine: np.ndarray,
    *,
    frame: StoreFrame | None = None,
    lut: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> Path:
    """Stream a 3-D array (a Zarr array: read slab by slab) into ``path`` (``.nii.gz``).

    ``frame`` says how the source's axes became the array's: the file gets the source's voxel
    order back, for ``affine`` (the source affine); None writes the array as it is. ``lut``
    maps each voxel value to another (e.g. VerSe labels to consecutive classes);
    ``allowed[value]`` False makes a voxel of that value an error (nothing is written).
    """
    dtype = lut.dtype if lut is not None else np.dtype(array.dtype)
    frame = frame or StoreFrame.identity(array.shape)
    with atomic_file(path) as raw, gzip_member(raw) as gz:
        gz.write(nifti1_header(frame.shape, dtype, affine))
        for slab in _slabs(array, frame, lut, allowed):
            # Fortran order of (n0, n1, d) = C order of its transpose.
            gz.write(np.ascontiguousarray(slab.astype(dtype, copy=False).T).tobytes())
    return path


def _write_case(path: Path, case: Case, array: Any, **labels: Any) -> Path:
    """One array of a case as NIfTI in the source's voxel order, with the source affine."""
    affine = case.affine if case.source_affine is None else case.source_affine
    return write_nifti(path, array, affine, frame=case.frame, **labels)


def _file_stem(case: Case) -> str:
    if not _SAFE_NAME.match(case.id) or ".." in case.id:
        raise InputError(
            str(case.store),
            f"case id {case.id!r} is not a safe file name (letters, digits, . _ -)",
            "the case is skipped; rename it in the source (ids come from the tables)",
            check="export",
        )
    return case.id


@dataclass
class Exported:
    """What an export wrote, and the cases it skipped (each with the error saying why)."""

    root: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[InputError] = field(default_factory=list)


def _stems(ds: Dataset, exported: Exported) -> Iterator[tuple[Case, str]]:
    """Each case of ``ds`` with its file stem; a case whose id is not a safe file name is
    recorded in ``exported.skipped`` and the export goes on with the others."""
    for case_id in ds.ids:
        case = ds.case(case_id)
        try:
            yield case, _file_stem(case)
        except InputError as e:
            exported.skipped.append(e)


def export_nifti(
    build: Path | str, out: Path, sources: Sequence[str] = ("verse", "mosmed")
) -> Exported:
    """Write ``<out>/<source>/<id>_ct.nii.gz`` for every case, and ``<id>_msk.nii.gz`` (uint8
    VerSe labels) where the case has a label image; return the files written and the cases
    skipped (an id that is not a safe file name)."""
    ds = Dataset(build, sources=sources)
    exported = Exported(out)
    for case, stem in _stems(ds, exported):
        folder = out / case.source
        exported.written.append(_write_case(folder / f"{stem}_ct.nii.gz", case, case.image))
        mask = case.mask
        if mask is not None:
            exported.written.append(_write_case(folder / f"{stem}_msk.nii.gz", case, mask))
    return exported


def nnunet_labels() -> dict[str, int]:
    """nnU-Net class of each VerSe vertebra: ``background`` 0, then the levels in label order
    (C1..C7, T1..T12, L1..L6, T13), consecutive as nnU-Net requires.

    Examples
    --------
    >>> labels = nnunet_labels()
    >>> labels["background"], labels["C1"], labels["L1"], labels["T13"], len(labels)
    (0, 1, 20, 26, 27)
    """
    return {"background": 0, **{VERSE_LEVELS[v]: i for i, v in enumerate(VERTEBRA_LABELS, 1)}}


def export_nnunet(
    build: Path | str, out: Path, dataset_id: int = 501, name: str = "VerSe"
) -> Exported:
    """Write the labelled VerSe scans as the nnU-Net v2 raw dataset
    ``<out>/Dataset<id>_<name>/`` (``imagesTr/<scan>_0000.nii.gz``, ``labelsTr/<scan>.nii.gz``,
    ``dataset.json``); return its folder, the files written and the cases skipped (an id that
    is not a safe file name; ``numTraining`` counts the cases written). Labels are remapped to consecutive classes
    (:func:`nnunet_labels`); ``verse_labels.json`` maps them back to VerSe label values.

    Raises
    ------
    InputError
        If a label image holds a value outside the VerSe label map.
    """
    if not 1 <= dataset_id <= 999 or not _SAFE_NAME.match(name):
        raise ParamsError(
            f"{out}: nnU-Net dataset id and name not usable (expected an id 1..999 and a plain "
            f"name of letters, digits, '-' or '_', got {dataset_id}, {name!r}); pass "
            "--dataset-id and --name accordingly"
        )
    root = out / f"Dataset{dataset_id:03d}_{name}"
    labels = nnunet_labels()
    lut = np.zeros(256, dtype=np.uint8)
    for value in VERTEBRA_LABELS:
        lut[value] = labels[VERSE_LEVELS[value]]
    known = np.zeros(256, dtype=bool)
    known[[0, *VERTEBRA_LABELS]] = True
    ds = Dataset(build, sources=("verse",))
    exported = Exported(root)
    for case, stem in _stems(ds, exported):
        mask = case.mask
        assert mask is not None  # every VerSe scan has a label image
        exported.written.append(
            _write_case(root / "imagesTr" / f"{stem}_0000.nii.gz", case, case.image)
        )
        exported.written.append(
            _write_case(root / "labelsTr" / f"{stem}.nii.gz", case, mask, lut=lut, allowed=known)
        )
    dataset = {
        "name": name,
        "description": "VerSe vertebra segmentation, exported by verse-etl from its stores",
        "licence": "CC BY-SA 4.0 (VerSe; cite Sekuboyina et al. 2021, Loeffler et al. 2020)",
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": len(exported.written) // 2,
        "file_ending": ".nii.gz",
    }
    write_text_atomic(root / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    back = {str(i): v for i, v in enumerate((0, *VERTEBRA_LABELS))}
    write_text_atomic(root / "verse_labels.json", json.dumps(back, indent=2) + "\n")
    return exported
