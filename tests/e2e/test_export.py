"""`verse-etl export nifti` and `export nnunet`, read back with nibabel against the source files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
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


def test_export_skips_a_case_whose_id_is_unsafe_and_exits_1(tiny_build, tmp_path: Path) -> None:
    out, *_ = tiny_build
    # A copy of the build whose first scan is renamed to a path outside the export folder.
    build = tmp_path / "build"
    (build / "tables").mkdir(parents=True)
    shutil.copytree(out / "tables" / "scans", build / "tables" / "scans")
    (build / "volumes").symlink_to(out / "volumes")
    parts = sorted((build / "tables" / "scans").glob("*/*/*.parquet"))
    n_cases = sum(pq.read_metadata(p).num_rows for p in parts)
    part = parts[0]
    table = pq.read_table(part)
    ids = table.column("scan_id").to_pylist()
    index = table.schema.get_field_index("scan_id")
    renamed = pa.array(["../escape", *ids[1:]], pa.string())
    table = table.set_column(index, table.schema.field(index), renamed)
    pq.write_table(table, part)
    runner = CliRunner()
    for command in (["nifti"], ["nnunet", "--dataset-id", "9"]):
        target = tmp_path / command[0] / "out"
        result = runner.invoke(
            app, ["export", *command, "--build", str(build), "--out", str(target)]
        )
        assert result.exit_code == 1, result.output
        assert "skipped:" in result.output and "'../escape'" in result.output, result.output
        assert "1 case(s) skipped" in result.output
        written = sorted(p.name for p in target.rglob("*.nii.gz"))
        per_case = 2  # CT and labels
        assert len(written) == per_case * (n_cases - 1), written
        assert not any("escape" in p.name for p in tmp_path.rglob("*"))
    dataset = json.loads((tmp_path / "nnunet/out/Dataset009_VerSe/dataset.json").read_text())
    assert dataset["numTraining"] == n_cases - 1
