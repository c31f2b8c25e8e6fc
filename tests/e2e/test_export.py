"""`verse-etl export nifti` and `export nnunet`, read back with nibabel against the source files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from verse_etl.cli import app
from verse_etl.levels import VERSE_LEVELS
from verse_etl.read.export import nnunet_labels


def _source(src: Path, manifest, scan_id: str):
    scan = next(s for s in manifest.verse if s.scan_id == scan_id)
    return nib.load(src / scan.ct), nib.load(src / scan.mask)


def test_export_nifti_gives_the_source_voxels_and_affine(tiny_build, tmp_path: Path) -> None:
    out, src, manifest = tiny_build
    result = CliRunner().invoke(
        app, ["export", "nifti", "--build", str(out), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    for scan in manifest.verse:
        ct, mask = _source(src, manifest, scan.scan_id)
        got_ct = nib.load(tmp_path / "verse" / f"{scan.scan_id}_ct.nii.gz")
        got_mask = nib.load(tmp_path / "verse" / f"{scan.scan_id}_msk.nii.gz")
        np.testing.assert_array_equal(got_ct.affine, ct.affine)  # exact, not approximately
        np.testing.assert_array_equal(got_mask.affine, ct.affine)
        assert got_ct.get_data_dtype() == np.int16
        np.testing.assert_array_equal(np.asanyarray(got_ct.dataobj), np.asanyarray(ct.dataobj))
        np.testing.assert_array_equal(
            np.asanyarray(got_mask.dataobj), np.asanyarray(mask.dataobj).astype(np.uint8)
        )
    # MosMed series too (no label image), on the affine of the series table.
    mosmed = sorted((tmp_path / "mosmed").glob("*_ct.nii.gz"))
    assert len(mosmed) == 2 * len(manifest.mosmed)
    assert not list((tmp_path / "mosmed").glob("*_msk.nii.gz"))


def test_export_nnunet_writes_a_raw_dataset_with_vertebra_classes(
    tiny_build, tmp_path: Path
) -> None:
    out, src, manifest = tiny_build
    result = CliRunner().invoke(
        app,
        ["export", "nnunet", "--build", str(out), "--out", str(tmp_path), "--dataset-id", "7"],
    )
    assert result.exit_code == 0, result.output
    root = tmp_path / "Dataset007_VerSe"
    dataset = json.loads((root / "dataset.json").read_text())
    labels = dataset["labels"]
    assert labels == nnunet_labels() and sorted(labels.values()) == list(range(len(labels)))
    assert dataset["channel_names"] == {"0": "CT"} and dataset["file_ending"] == ".nii.gz"
    assert dataset["numTraining"] == len(manifest.verse)
    back = {int(k): v for k, v in json.loads((root / "verse_labels.json").read_text()).items()}
    images = sorted(p.name for p in (root / "imagesTr").iterdir())
    assert images == sorted(f"{s.scan_id}_0000.nii.gz" for s in manifest.verse)
    for scan in manifest.verse:
        ct, mask = _source(src, manifest, scan.scan_id)
        image = nib.load(root / "imagesTr" / f"{scan.scan_id}_0000.nii.gz")
        label = nib.load(root / "labelsTr" / f"{scan.scan_id}.nii.gz")
        np.testing.assert_array_equal(image.affine, ct.affine)
        np.testing.assert_array_equal(label.affine, ct.affine)
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), np.asanyarray(ct.dataobj))
        classes = np.asanyarray(label.dataobj)
        source = np.asanyarray(mask.dataobj).astype(np.uint8)
        # Each class is the vertebra the source labels, by level name.
        np.testing.assert_array_equal(np.vectorize(back.get)(classes), source)
        for value in np.unique(source[source > 0]):
            assert labels[VERSE_LEVELS[int(value)]] in np.unique(classes[source == value])
