"""Write small, valid CT DICOM series for tests (pydicom, Explicit VR Little Endian)."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_series(
    folder: Path,
    volume: np.ndarray,
    *,
    spacing: Sequence[float] = (0.7, 0.7),
    positions: Sequence[Sequence[float]] | None = None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    intercept: float = -1024.0,
    series_uid: str | None = None,
    study_uid: str = "1.2.3.4",
    instance_numbers: Sequence[int | None] | None = None,
    patient_name: str = "DOE^JANE",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    pixel_spacings: Sequence[Sequence[float]] | None = None,
) -> list[Path]:
    """Write ``volume[row, col, n]`` as slices n = 0..N-1 (InstanceNumber n+1, head to feet)."""
    folder.mkdir(parents=True, exist_ok=True)
    if series_uid is None:
        # Derived from what is written, not random: builds of the same test files are then
        # byte-identical (tests/output_digests.py compares them with a committed manifest).
        written = (spacing, positions, orientation, intercept, study_uid, instance_numbers)
        series_uid = generate_uid(
            entropy_srcs=[
                folder.parent.name,
                folder.name,
                hashlib.sha256(np.ascontiguousarray(volume).tobytes()).hexdigest(),
                repr((*written, image_type, pixel_spacings, patient_name)),
            ]
        )
    n = volume.shape[2]
    if positions is None:
        positions = [(-100.0, -120.0, 50.0 - 1.25 * i) for i in range(n)]
    paths = []
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(
            entropy_srcs=[folder.parent.name, folder.name, series_uid, str(i)]
        )
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.ImageType = list(image_type)
        ds.Modality = "CT"
        ds.PatientName = patient_name
        ds.PatientID = "PID-123"
        ds.PatientBirthDate = "19500101"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study_uid
        number = instance_numbers[i] if instance_numbers is not None else i + 1
        if number is not None:
            ds.InstanceNumber = number
        ds.ImagePositionPatient = [float(v) for v in positions[i]]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ps = pixel_spacings[i] if pixel_spacings is not None else spacing
        ds.PixelSpacing = [float(ps[0]), float(ps[1])]
        ds.SliceThickness = 1.25
        ds.Rows, ds.Columns = volume.shape[:2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = 1
        stored = volume[:, :, i].astype(np.int32) - int(intercept)
        if intercept < 0:
            ds.PixelRepresentation = 0
            ds.PixelData = stored.astype(np.uint16).tobytes()
        else:
            ds.PixelRepresentation = 1
            ds.PixelData = stored.astype(np.int16).tobytes()
        path = folder / f"IM{(i * 7919 + sum(map(ord, series_uid))) % 100003:06d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
