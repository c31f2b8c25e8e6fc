"""No patient name, id, birth date, address or institution reaches any output of a build.

Headers come from pydicom's own test files: the character-set files (real-looking names in
Arabic, French, German, Greek, Hebrew, Japanese, Korean, Russian and Chinese, in their DICOM
encodings) and CT_small.dcm (a real CT header with patient, institution and other-id tags). Each
becomes a small CT series that a build converts; then every Parquet cell, store attribute and
saved case result is searched for every identifying value.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from verse_etl.schemas import TABLES

from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import CheckParams, VolumeParams
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.tables.assemble import assemble
from verse_etl.tables.parquet import read_table

CHARSET_FILES = [
    "chrArab.dcm",
    "chrFren.dcm",
    "chrGerm.dcm",
    "chrGreek.dcm",
    "chrH31.dcm",
    "chrH32.dcm",
    "chrHbrw.dcm",
    "chrI2.dcm",
    "chrJapMulti.dcm",
    "chrKoreanMulti.dcm",
    "chrRuss.dcm",
    "chrX1.dcm",
    "chrX2.dcm",
]
ADDED = {
    "PatientAddress": "221B BAKER STREET LONDON",
    "PatientBirthDate": "19471124",
    "InstitutionName": "ST ELSEWHERE HOSPITAL",
    "InstitutionAddress": "DR ZHIVAGO LANE 7",
    "ReferringPhysicianName": "ROE^RICHARD",
    "SeriesDescription": "CHEST FOR JOHNSMITH",
    "StudyDescription": "SCREENING OF JOHNSMITH",
    "OtherPatientIDs": "MRN-99817",
    "AccessionNumber": "ACC-77123",
}


def _ct_slices(template: pydicom.Dataset, n: int, *, ct: bool = False) -> list[pydicom.Dataset]:
    """``n`` CT slices keeping every identifying element of ``template``."""
    series, study = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = copy.deepcopy(template)
        for keyword, value in ADDED.items():
            setattr(ds, keyword, value)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series, study
        ds.Modality = "CT"
        ds.InstanceNumber = i + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, -2.5 * i]
        ds.PixelSpacing = [0.5, 0.5]
        if not ct:
            ds.Rows = ds.Columns = 8
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = 1, 0
            ds.PixelData = (np.arange(64, dtype=np.int16) * (i + 1)).tobytes()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        # The character-set files become implicit VR little endian (the DICOM default).
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if ct else ImplicitVRLittleEndian
        out.append(ds)
    return out


def _secrets(ds: pydicom.Dataset) -> set[str]:
    name = str(ds.PatientName)
    parts = {p for p in re.split(r"[\^=]", name) if len(p) >= 2}
    values = {name, str(ds.get("PatientID", "")), str(ds.get("PatientBirthDate", ""))}
    return {v for v in values | parts if len(v) >= 2}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("phi") / "mosmed"
    secrets: set[str] = set(ADDED.values()) | {"ROE", "RICHARD", "JOHNSMITH"}
    studies = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sources = [(Path(get_charset_files(n)[0]), False) for n in CHARSET_FILES]
        sources.append((Path(get_testdata_file("CT_small.dcm")), True))
        for path, is_ct in sources:
            template = pydicom.dcmread(path)
            secrets |= _secrets(template)
            if is_ct:
                secrets |= {str(template.InstitutionName), "ABCD1234", "1234ABCD"}
            folder = root / "dicom" / f"STUDY{studies:02d}" / "nested"
            folder.mkdir(parents=True)
            for i, ds in enumerate(_ct_slices(template, 3, ct=is_ct)):
                ds.save_as(folder / f"{path.stem}_{i}", enforce_file_format=True)
            studies += 1
    out = tmp_path_factory.mktemp("phi-build")
    results = [
        build_mosmed_study(s, root, out, VolumeParams(chunks=(8, 8, 8), shard_chunks=(1, 1, 1)))
        for s in discover_mosmed(root)
    ]
    assemble(results, out, CheckParams())
    return out, secrets, studies


def test_the_names_are_really_there_to_leak(built) -> None:
    _, secrets, _ = built
    # Several scripts, so that an encoding slip (e.g. bytes written instead of text) would show.
    assert {"Люкceмбypг", "山田", "길동", "Äneas", "Διονυσιος", "שרון", "قباني"} <= secrets


def test_every_series_was_converted(built) -> None:
    out, _, studies = built
    series = read_table(out, "series").to_pandas()
    assert len(series) == studies and series["is_volume"].all(), series["problems"].tolist()


def test_no_identifying_value_reaches_any_output(built) -> None:
    out, secrets, _ = built
    texts = []
    for name in TABLES:
        df = read_table(out, name).to_pandas()
        texts += [str(v) for v in df.to_numpy().ravel()]
        texts += list(df.columns)
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", "") and path.stat().st_size < 1_000_000:
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                continue  # compressed chunk data
    blob = "\n".join(texts)
    assert len(blob) > 1000
    leaked = sorted(s for s in secrets if s in blob)
    assert not leaked
