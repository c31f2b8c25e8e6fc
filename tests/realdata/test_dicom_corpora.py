"""Real CT DICOM written by others (../shared/corpora): each case gets its expected verdict, and the
one clean series gives dcm2niix's voxels and affine.

Corpora: neurolabusc/dcm_qa_ct (dcm2niix's CT regression suite: a Philips phantom series and a GE
head series with 18.5 degree gantry tilt and uneven gaps) and icometrix/dicom2nifti's failing CT
cases. Their ORIGIN.md files say what each case is and what the upstream tools do with it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from verse_etl.geometry.affines import apply_affine
from verse_etl.geometry.series import check_series
from verse_etl.io.dicom import scan_folder
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import CheckParams, VolumeParams
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.stores.volumes import read_source_order
from verse_etl.tables.assemble import assemble
from verse_etl.tables.parquet import read_table

# case -> (verdict, every finding, tilt in degrees or None, slices missing from whole gaps)
EXPECTED: dict[str, tuple[str, tuple[str, ...], float | None, int]] = {
    # Clean helical phantom series, 28 x 5 mm, files without extension and a DIRFILE.
    "dcm_qa_ct/In/Philips_S21570_S2010": ("volume", (), 0.0, 0),
    # GantryDetectorTilt 18.5, intervals 1.08 / 4.0 / 7.0 mm: sheared and irregular.
    "dcm_qa_ct/In/GE": ("gantry_tilt", ("gantry_tilt", "uneven_spacing"), 18.5, 0),
    # Tilt visible only as a tilted ImageOrientationPatient with positions straight along z.
    "dicom2nifti/failing/gantrytilting/001": ("gantry_tilt", ("gantry_tilt",), 14.0, 0),
    # Four images at one position (repeated single slice).
    "dicom2nifti/failing/notavolume/001": ("not_a_volume", ("not_a_volume",), None, 0),
    # z = 18.1, 23.1, 28.1, 38.1: one 5 mm slice missing.
    "dicom2nifti/failing/sliceincrement/001": ("missing_slices", ("missing_slices",), 0.0, 1),
    # Tilted by 15.5 degrees and instance 4 missing.
    "dicom2nifti/failing/sliceincrement/002": (
        "gantry_tilt",
        ("gantry_tilt", "missing_slices"),
        15.5,
        1,
    ),
}
PHILIPS = "dcm_qa_ct/In/Philips_S21570_S2010"
REFERENCE = "dcm_qa_ct/Ref_regenerated_dcm2niix_v1.0.20260724/1A_TRAUMA_PLAIN_HEAD_DM_Head_201"


@pytest.fixture(scope="module")
def corpora(shared: Path) -> Path:
    """The corpora, their data files checked against the SHA256SUMS shipped with them (the
    notes beside them, ORIGIN.md and READMEs, are edited and not checked)."""
    root = shared / "corpora"
    for sums in ("dcm_qa_ct/SHA256SUMS", "dicom2nifti/SHA256SUMS"):
        for line in (root / sums).read_text().splitlines():
            digest, name = line.split(maxsplit=1)
            if name.split("/")[1] not in (
                "In",
                "Ref",
                "Ref_regenerated_dcm2niix_v1.0.20260724",
                "failing",
            ):
                continue
            path = (root / sums).parent / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
    return root


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_corpus_case_gets_its_verdict(corpora: Path, case: str) -> None:
    verdict, findings, tilt, missing = EXPECTED[case]
    scan = scan_folder(corpora / case)
    assert not scan.errors
    (headers,) = scan.series.values()
    g = check_series(headers)
    assert (g.verdict, g.findings, g.missing_slices) == (verdict, findings, missing), g.problems
    if tilt is None:
        assert g.tilt_deg is None
    else:
        assert g.tilt_deg == pytest.approx(tilt, abs=0.01)
    assert g.is_volume == (verdict == "volume")
    assert (g.affine is None) == (verdict != "volume")  # never a silently stacked volume


@pytest.fixture(scope="module")
def built(corpora: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every corpus case as one study of a MosMed-like root, through the whole case builder."""
    root = tmp_path_factory.mktemp("corpora") / "mosmed"
    for case in EXPECTED:
        shutil.copytree(corpora / case, root / "dicom" / case.replace("/", "_"))
    out = tmp_path_factory.mktemp("build")
    volumes = VolumeParams(chunks=(64, 64, 8), shard_chunks=(8, 8, 4))
    results = [build_mosmed_study(s, root, out, volumes) for s in discover_mosmed(root)]
    assemble(results, out, CheckParams())
    names = ("series", "quarantine")
    return root, out, {n: read_table(out, n).to_pandas() for n in names}


CORRECTABLE = {"gantry_tilt", "uneven_spacing"}  # missing slices are never interpolated over


def test_the_builder_reports_each_case_and_converts_only_the_clean_one(built) -> None:
    _, _, tables = built
    series = tables["series"].set_index("folder")
    for case, (verdict, findings, _, _) in EXPECTED.items():
        row = series.loc[case.replace("/", "_")]
        assert (row["verdict"], row["findings"]) == (verdict, ",".join(findings))
        assert row["is_volume"] == (verdict == "volume")
        # mosmed.tilt = correct (default): a series whose only findings are tilt, uneven
        # spacing is resampled into a store (tests/realdata/test_tilt_correction.py).
        resampled = verdict != "volume" and set(findings) <= CORRECTABLE
        assert pd.notna(row["store_path"]) == (verdict == "volume" or resampled)
        assert pd.notna(row["correction"]) == resampled
    q = tables["quarantine"]
    checks = set(zip(q["case_id"], q["check_name"], strict=True))
    for case, (verdict, *_) in EXPECTED.items():
        if verdict != "volume":
            assert (case.replace("/", "_"), f"series_{verdict}") in checks
    # The Philips DIRFILE (a DICOM media directory, no image) is recorded, not converted.
    dirfile = q[q["file"].str.endswith("/DIRFILE")]
    assert list(dirfile["check_name"]) == ["not_dicom_image"]
    assert "Media Storage Directory" in dirfile["reason"].iloc[0]
    ge = series.loc["dcm_qa_ct_In_GE"]
    assert ge["gantry_detector_tilt_deg"] == pytest.approx(18.5)
    assert ge["tilt_deg"] == pytest.approx(18.5, abs=0.01)


def test_philips_series_equals_dcm2niix_voxels_and_affine(shared: Path, built) -> None:
    """Our store is ``[row, column, slice]`` with slices ascending along the normal and a RAS+
    affine. dcm2niix writes ``[column, flipped row, slice]``: NIfTI i is the DICOM column, j runs
    from the last row up (it flips rows so that j points anterior), k is the same slice order.
    Two arrays with different axis orders are the same image if they agree in world
    coordinates, so both are reoriented to the closest canonical (RAS) axes with nibabel and
    compared voxel for voxel; the affines must then be equal too. The voxel-level map between
    the two is checked directly as well."""
    _, out, tables = built
    row = tables["series"].set_index("folder").loc[PHILIPS.replace("/", "_")]
    ours = read_source_order(out / row["store_path"])  # [row, column, slice]
    affine = np.reshape(row["affine"], (4, 4))
    reference = nib.load(str(shared / "corpora" / f"{REFERENCE}.nii.gz"))
    # dcm2niix stores the raw int16 pixel values with scl_slope 1, scl_inter -1024 (the DICOM
    # rescale); scaled, they are the HU, exactly whole numbers, that the store holds as int16.
    assert reference.get_data_dtype() == np.int16
    assert (reference.dataobj.slope, reference.dataobj.inter) == (1.0, -1024.0)
    scaled = np.asanyarray(reference.dataobj)
    ref_data = scaled.astype(np.int16)
    np.testing.assert_array_equal(ref_data, scaled)
    assert ours.dtype == np.int16 and ours.shape == ref_data.shape
    a = nib.as_closest_canonical(nib.Nifti1Image(ours, affine))
    b = nib.as_closest_canonical(nib.Nifti1Image(ref_data, reference.affine))
    np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    # Voxel (r, c, s) of ours is voxel (c, rows - 1 - r, s) of dcm2niix, at the same world point.
    rows = ours.shape[0]
    for r, c, s in [(0, 0, 0), (511, 0, 27), (100, 400, 13), (511, 511, 27)]:
        assert ours[r, c, s] == ref_data[c, rows - 1 - r, s]
        np.testing.assert_allclose(
            apply_affine(affine, [[r, c, s]]),
            apply_affine(reference.affine, [[c, rows - 1 - r, s]]),
            atol=1e-3,
        )
    assert (int(ours.min()), int(ours.max())) == (-1024, 782) == (row["hu_min"], row["hu_max"])


def test_allow_listed_tags_agree_with_dcm2niix_and_nothing_else_leaks(shared: Path, built) -> None:
    _, out, tables = built
    sidecar = json.loads((shared / "corpora" / f"{REFERENCE}.json").read_text())
    row = tables["series"].set_index("folder").loc[PHILIPS.replace("/", "_")]
    assert (row["manufacturer"], row["model"], row["kernel"], row["modality"]) == (
        sidecar["Manufacturer"],
        sidecar["ManufacturersModelName"],
        sidecar["ConvolutionKernel"],
        sidecar["Modality"],
    )
    assert row["series_number"] == sidecar["SeriesNumber"]
    assert row["patient_position"] == sidecar["PatientPosition"]
    # dcm2niix copies institution, address, station and serial number; this table must not.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = pydicom.dcmread(next((shared / "corpora" / PHILIPS).glob("I1*")))
    secrets = {
        sidecar["InstitutionName"],
        sidecar["InstitutionAddress"],
        sidecar["StationName"],
        sidecar["DeviceSerialNumber"],
        sidecar["SeriesDescription"],
        str(first.PatientID),
        str(first.PatientName),
    } - {""}
    text = " ".join(
        str(v) for name in ("series", "quarantine") for v in tables[name].to_numpy().ravel()
    )
    text += " ".join(p.read_text() for p in out.rglob("zarr.json"))
    assert not {s for s in secrets if s in text}
