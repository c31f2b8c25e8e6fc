"""Resource guards: inputs refused before they are opened, allocated or parsed."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.dicom_factory import write_series
from verse_etl.errors import InputError
from verse_etl.io.dicom import read_slice_header
from verse_etl.io.files import list_files
from verse_etl.io.json_files import read_json
from verse_etl.io.nifti import read_nifti_info
from verse_etl.params import InputLimits
from verse_etl.sources.mosmed import read_id_mapping
from verse_etl.verse.centroids import read_centroids


def _refused(call, check: str) -> InputError:  # type: ignore[no-untyped-def]
    """Run ``call`` in a thread (a FIFO read would block for ever) and return its InputError."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:
            caught.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "blocked: the file was opened"
    assert caught and isinstance(caught[0], InputError), caught
    assert caught[0].check == check, caught[0]
    return caught[0]


def test_deep_json_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    error = _refused(lambda: read_json(path, InputLimits(), "centroid_json"), "too_deep")
    assert "200000 levels" in str(error)
    # Brackets inside strings are text, not nesting.
    path.write_text(json.dumps({"a": "[" * 1000}))
    assert read_json(path, InputLimits(max_json_depth=1), "x") == {"a": "[" * 1000}


def test_large_json_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps(list(range(10_000))))
    _refused(lambda: read_json(path, InputLimits(max_json_bytes=1000), "x"), "too_large")


def test_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "sub-verse004_seg-subreg_ctd.json"
    os.mkfifo(fifo)
    error = _refused(lambda: read_json(fifo, InputLimits(), "centroid_json"), "not_regular_file")
    assert "FIFO" in str(error)
    _refused(lambda: read_nifti_info(fifo), "not_regular_file")


def test_special_files_in_the_verse_tree_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "dataset-verse19training" / "rawdata" / "sub-verse004"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "sub-verse004_ct.nii.gz")
    (folder / "sub-verse004_ct.json").symlink_to(tmp_path / "gone.json")
    files, problems = list_files(tmp_path)
    assert files == []
    named = {Path(p.path).name: (p.check, p.problem) for p in problems}
    assert named["sub-verse004_ct.nii.gz"][0] == "not_regular_file"
    assert "FIFO" in named["sub-verse004_ct.nii.gz"][1]
    assert "broken link" in named["sub-verse004_ct.json"][1]


def _nifti_header_only(path: Path, shape: tuple[int, ...], dtype: type = np.int16) -> Path:
    """A NIfTI file whose header claims ``shape`` but holds 8 bytes of voxels."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + bytes(4) + bytes(8))
    return path


def test_huge_nifti_shape_is_refused_before_allocation(tmp_path: Path) -> None:
    path = _nifti_header_only(tmp_path / "huge.nii", (30000, 30000, 3000))
    error = _refused(lambda: read_nifti_info(path), "too_large")
    assert "(30000, 30000, 3000)" in str(error)
    small = InputLimits(max_voxels=10**6, max_slice_pixels=10**6)
    _refused(lambda: read_nifti_info(_nifti_header_only(path, (100, 100, 200)), small), "too_large")


def test_a_size_below_1_in_the_header_is_called_corrupt(tmp_path: Path) -> None:
    # A negative dim[1] used to be reported as "expected a 3-D volume ... split 4-D series".
    import struct

    path = _nifti_header_only(tmp_path / "ct.nii", (4, 4, 4))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<h", raw, 42, -5)  # dim[1]
    path.write_bytes(bytes(raw))
    error = _refused(lambda: read_nifti_info(path), "shape")
    assert "(-5, 4, 4)" in str(error) and "corrupt" in str(error), error
    assert "4-D" not in str(error)


@pytest.mark.parametrize(
    "dtype", [np.complex64, np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])], ids=["c", "rgb"]
)
def test_complex_and_rgb_voxels_are_refused(tmp_path: Path, dtype: np.dtype) -> None:
    path = tmp_path / "ct.nii.gz"
    nib.Nifti1Image(np.zeros((4, 4, 4), dtype=dtype), np.eye(4)).to_filename(path)
    error = _refused(lambda: read_nifti_info(path), "voxel_type")
    assert "expected real numbers" in str(error)


def test_dicom_slice_claiming_30000_squared_pixels_is_refused(tmp_path: Path) -> None:
    (path, *_) = write_series(tmp_path, np.zeros((4, 4, 2), np.int16))
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 30000
    ds.save_as(path)
    error = _refused(lambda: read_slice_header(path), "too_large")
    assert "30000 x 30000" in str(error)


def test_a_rescale_slope_that_is_not_a_finite_number_is_refused(tmp_path: Path) -> None:
    (path, *_) = write_series(tmp_path, np.zeros((4, 4, 2), np.int16))
    raw = path.read_bytes()
    tag = b"\x28\x00\x53\x10DS"  # (0028,1053) RescaleSlope, explicit VR little endian
    at = raw.index(tag) + len(tag)
    length = int.from_bytes(raw[at : at + 2], "little")
    path.write_bytes(raw[:at] + b"\x06\x001e9999" + raw[at + 2 + length :])
    error = _refused(lambda: read_slice_header(path), "dicom_header")
    assert "RescaleSlope" in str(error)


@pytest.mark.parametrize("label", [10.7, True, "20", 1e400], ids=["10.7", "true", "str", "1e400"])
def test_centroid_labels_are_never_coerced(tmp_path: Path, label: object) -> None:
    path = tmp_path / "c.json"
    text = json.dumps([{"direction": ["L", "P", "S"]}, {"label": label, "X": 1, "Y": 2, "Z": 3}])
    path.write_text(text.replace("Infinity", "1e400"))
    error = _refused(lambda: read_centroids(path, (10, 10, 10), np.eye(4), "RAS"), "centroid_label")
    assert "expected a whole number" in str(error)
    path.write_text(text.replace(json.dumps(label), "20.0") if label != 1e400 else "[]")


def test_a_fifo_as_the_identifier_mapping_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "mapping.csv"
    os.mkfifo(fifo)
    error = _refused(lambda: read_id_mapping(fifo), "id_mapping")
    assert "FIFO" in str(error)
