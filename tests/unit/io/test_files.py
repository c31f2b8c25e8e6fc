"""Zip members are read in place; members no release holds (unsafe names, links, special
entries, decompression bombs) are refused one by one, each with a record, and the rest of the
archive builds. Nothing is ever written outside the build folder."""

from __future__ import annotations

import hashlib
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.archive_factory import BOMB_BYTES, add_zip_member, corrupt_zip_member
from tests.e2e.library_build import build_sources
from verse_etl.errors import InputError
from verse_etl.io.files import SourceFile, list_files
from verse_etl.params import BuildParams, SourceParams, VolumeParams
from verse_etl.read.catalog import query
from verse_etl_sample import write_sample
from verse_etl_sample.verse_variants import zip_release

RAW = "dataset-01training/rawdata"


def test_hostile_members_are_refused_and_the_rest_listed(tmp_path: Path) -> None:
    archive = tmp_path / "dataset-verse20training.zip"
    with zipfile.ZipFile(archive, "w") as z:
        add_zip_member(z, f"{RAW}/sub-gl003/sub-gl003_dir-ax_ct.json", b"{}")
        add_zip_member(z, f"../{RAW}/sub-gl004/up.json")
        add_zip_member(z, f"{RAW}/sub-gl005/../../../../up.json")
        add_zip_member(z, f"/{RAW}/sub-gl006/absolute.json")
        add_zip_member(z, f"{RAW}/sub-gl007/link.nii.gz", symlink_to="/etc/passwd")
        add_zip_member(z, f"{RAW}/sub-gl008/fifo.nii.gz", b"", mode=stat.S_IFIFO | 0o644)
        add_zip_member(z, f"{RAW}/sub-gl009/bomb.nii.gz", bytes(BOMB_BYTES), deflate=True)
        # 1 MiB of zeros deflates 1000x too, but is too small to harm: not a bomb.
        add_zip_member(z, f"{RAW}/sub-gl010/zeros.json", bytes(1 << 20), deflate=True)
        add_zip_member(z, "__MACOSX/._sub-gl003_dir-ax_ct.json")  # resource fork: skipped
    files, problems = list_files(tmp_path)
    assert [f.member for f in files] == [
        f"{RAW}/sub-gl003/sub-gl003_dir-ax_ct.json",
        f"{RAW}/sub-gl010/zeros.json",
    ]
    refused = {e.path.removeprefix(f"{archive}!/"): e for e in problems}
    assert {name: e.check for name, e in refused.items()} == {
        f"../{RAW}/sub-gl004/up.json": "archive_member",
        f"{RAW}/sub-gl005/../../../../up.json": "archive_member",
        f"/{RAW}/sub-gl006/absolute.json": "archive_member",
        f"{RAW}/sub-gl007/link.nii.gz": "archive_member",
        f"{RAW}/sub-gl008/fifo.nii.gz": "archive_member",
        f"{RAW}/sub-gl009/bomb.nii.gz": "archive_bomb",
    }
    assert "unsafe name" in refused[f"/{RAW}/sub-gl006/absolute.json"].problem
    assert "symbolic link" in refused[f"{RAW}/sub-gl007/link.nii.gz"].problem
    assert "not a regular file" in refused[f"{RAW}/sub-gl008/fifo.nii.gz"].problem
    bomb = str(refused[f"{RAW}/sub-gl009/bomb.nii.gz"])
    assert "expands to more than 100 times its size" in bomb and f"{BOMB_BYTES} bytes" in bomb
    assert all("was not read" in e.fix for e in problems)


@pytest.mark.parametrize("deflate", [False, True])
def test_corrupt_member_is_an_input_error(tmp_path: Path, deflate: bool) -> None:
    archive = tmp_path / "release.zip"
    member = f"{RAW}/sub-gl003/sub-gl003_dir-ax_ct.nii.gz"
    noise = np.random.default_rng(0).integers(0, 255, 1 << 16, dtype=np.uint8).tobytes()
    with zipfile.ZipFile(archive, "w") as z:
        add_zip_member(z, member, noise, deflate=deflate)
    corrupt_zip_member(archive, member)
    source = SourceFile(archive, member)
    for read in (source.sha256, source.read_bytes):
        with pytest.raises(InputError, match="cannot read the zip member") as info:
            read()
        assert info.value.check == "read" and info.value.path == str(source)


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _ct(n: int) -> str:
    return f"{RAW}/sub-gl90{n}/sub-gl90{n}_dir-ax_ct.nii.gz"


def test_good_members_of_a_hostile_release_zip_still_build(tmp_path: Path) -> None:
    sample = tmp_path / "sample"
    manifest = write_sample(sample, seed=4, verse_cases=4, mosmed_studies=0, size="tiny")
    ct = (sample / manifest.verse[2].ct).read_bytes()
    archive = zip_release(sample / "verse", "dataset-01training")
    with zipfile.ZipFile(archive, "a") as z:
        add_zip_member(z, f"../{_ct(1)}", ct)
        add_zip_member(z, f"/{_ct(2)}", ct)
        add_zip_member(z, _ct(3), symlink_to="/etc/passwd")
        add_zip_member(z, _ct(4), bytes(BOMB_BYTES), deflate=True)
    before = _tree(tmp_path)
    out = tmp_path / "out"
    sources = SourceParams(verse=str(sample / "verse"))
    volumes = VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2), pyramid_levels=0)
    build_sources(BuildParams(out=str(out), sources=sources, volumes=volumes))
    scans = query(out, "SELECT scan_id FROM scans").to_pandas()
    assert sorted(scans["scan_id"]) == sorted(s.scan_id for s in manifest.verse)
    q = query(out, "SELECT file, check_name, reason FROM quarantine").to_pandas()
    zipped = "dataset-verse20training.zip!/"
    assert dict(zip(q["file"], q["check_name"], strict=True)) == {
        f"{zipped}../{_ct(1)}": "archive_member",
        f"{zipped}/{_ct(2)}": "archive_member",
        f"{zipped}{_ct(3)}": "archive_member",
        f"{zipped}{_ct(4)}": "archive_bomb",
    }
    assert all(r.startswith(f"{f}: ") for f, r in zip(q["file"], q["reason"], strict=True))
    # Zips are read in place: the sources are untouched and nothing appears beside them.
    after = {k: v for k, v in _tree(tmp_path).items() if not k.startswith("out/")}
    assert after == before
