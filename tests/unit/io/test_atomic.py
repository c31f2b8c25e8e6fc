"""Writes through a temporary name never follow a link planted under that name: the temporary
names hold the process id, so anyone who can write in the output folder can guess them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from verse_etl.cases.records import QuarantineRecord, write_text_atomic
from verse_etl.io.atomic import atomic_file, new_folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside"
    target.mkdir()
    (target / "victim.txt").write_text("keep me")
    return target


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "keep me"


def test_a_case_result_is_not_written_through_a_planted_link(tmp_path: Path, outside: Path) -> None:
    out = tmp_path / "build"
    out.mkdir()
    final = out / "verse.json"
    (out / f"verse.json.tmp-{os.getpid()}").symlink_to(outside / "victim.txt")
    write_text_atomic(final, '{"ok": 1}')
    assert final.read_text() == '{"ok": 1}' and not final.is_symlink()
    _untouched(outside)
    assert sorted(p.name for p in out.iterdir()) == ["verse.json"]


def test_an_exported_file_is_not_written_through_a_planted_link(
    tmp_path: Path, outside: Path
) -> None:
    final = tmp_path / "ct.nii.gz"
    (tmp_path / f".ct.nii.gz.{os.getpid()}.tmp").symlink_to(outside / "victim.txt")
    with atomic_file(final) as f:
        f.write(b"nifti")
    assert final.read_bytes() == b"nifti"
    _untouched(outside)


def test_a_temporary_folder_is_a_new_folder_of_its_own(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / ".scans.tmp-1"
    link.symlink_to(outside)
    assert new_folder(link).is_dir() and not link.is_symlink() and not any(link.iterdir())
    _untouched(outside)
    (link / "left-by-a-killed-build").write_text("x")
    assert not any(new_folder(link).iterdir())


def test_tables_and_stores_are_not_written_through_planted_links(
    tmp_path: Path, outside: Path
) -> None:
    from verse_etl.schemas import QUARANTINE, SORT_KEYS

    from verse_etl.params import VolumeParams
    from verse_etl.stores.volumes import IMAGE_PATH, StoreWriter, open_array
    from verse_etl.tables.parquet import frame, quarantine_frame, write_table

    tables = tmp_path / "build" / "tables"
    tables.mkdir(parents=True)
    (tables / f".quarantine.tmp-{os.getpid()}").symlink_to(outside)
    record = QuarantineRecord("verse", "gl003", "", "a.nii.gz", "read", "cannot read")
    rows = [{**row, "source": "verse", "release": "verse19"} for row in quarantine_frame([record])]
    df = frame(rows, QUARANTINE.model, SORT_KEYS["quarantine"])
    files = write_table(df, tables / "quarantine", QUARANTINE.model)
    assert files and all(f.is_file() and tables in f.parents for f in files)
    _untouched(outside)

    store = tmp_path / "build" / "volumes" / "gl003.zarr"
    store.parent.mkdir(parents=True)
    (store.parent / f"gl003.zarr.tmp-{os.getpid()}").symlink_to(outside)
    volume = np.arange(8 * 8 * 4, dtype=np.int16).reshape(8, 8, 4)
    params = VolumeParams(chunks=(4, 4, 4), shard_chunks=(2, 2, 1), pyramid_levels=0)
    with StoreWriter(store, params, {}) as writer:
        writer.write_array(IMAGE_PATH, volume.shape, volume.dtype, iter([(0, volume)]))
    assert np.array_equal(open_array(store)[...], volume)
    _untouched(outside)


def test_a_qc_picture_is_not_drawn_through_a_planted_link(tmp_path: Path, outside: Path) -> None:
    from PIL import Image

    from verse_etl.report.qc import Picture, _save

    png = tmp_path / "report" / "qc" / "verse-gl003.png"
    png.parent.mkdir(parents=True)
    (png.parent / "verse-gl003.png.tmp.png").symlink_to(outside / "victim.txt")
    _save(Image.new("L", (4, 3)), Picture(png, 4, 3, 0, 1.0))
    assert Image.open(png).size == (4, 3) and not png.is_symlink()
    _untouched(outside)
