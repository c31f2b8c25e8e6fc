"""Study archives unpack only plain files, only inside the temporary folder, and say what they
refused; a broken archive is an error, not a partial study."""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

import pytest

from tests.archive_factory import add_tar_member
from verse_etl.errors import InputError
from verse_etl.io.archives import MEMBER_SEPARATOR, unpack_archive


def test_only_safe_regular_members_are_written(tmp_path: Path) -> None:
    archive = tmp_path / "dicom" / "S.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        add_tar_member(tar, "S/S/a/IM1", b"one")
        add_tar_member(tar, "./S/S/IM2", b"two")
        add_tar_member(tar, "../../escaped", b"evil")
        add_tar_member(tar, f"{tmp_path}/absolute", b"evil")
        add_tar_member(tar, "S/S/../../../up", b"evil")
        add_tar_member(tar, "S/S/link", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add_tar_member(tar, "S/S/hard", type=tarfile.LNKTYPE, linkname="S/S/a/IM1")
        add_tar_member(tar, "S/S/fifo", type=tarfile.FIFOTYPE)
        add_tar_member(tar, "S/S/a/IM1", b"again")
    dest = tmp_path / "unpack" / "here"
    dest.mkdir(parents=True)
    result = unpack_archive(archive, dest)
    assert [(f.member, f.path.read_bytes()) for f in result.files] == [
        ("S/S/IM2", b"two"),
        ("S/S/a/IM1", b"one"),
    ]
    refused = {e.path.split(MEMBER_SEPARATOR)[1]: e.problem for e in result.refused}
    assert set(refused) == {
        "../../escaped",
        f"{tmp_path}/absolute",
        "S/S/../../../up",
        "S/S/link",
        "S/S/hard",
        "S/S/fifo",
        "S/S/a/IM1",
    }
    assert "link" in refused["S/S/link"] and "twice" in refused["S/S/a/IM1"]
    assert all(e.check == "archive_member" for e in result.refused)
    # Nothing was written anywhere but inside dest.
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in outside) == ["dicom/S.tar.gz"]


@pytest.mark.parametrize("damage", ["truncate", "not_gzip"])
def test_broken_archive_is_an_error(tmp_path: Path, damage: str) -> None:
    archive = tmp_path / "S.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(20):
            # Noise-like bytes, as CT pixel data: a repeating pattern would compress like a bomb.
            add_tar_member(tar, f"S/S/IM{i}", random.Random(i).randbytes(100_000))
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"PK\x03\x04" + raw)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InputError, match="cannot read the study archive") as info:
        unpack_archive(archive, dest)
    assert info.value.check == "archive_read" and info.value.path == str(archive)


def test_decompression_bomb_is_refused_before_it_fills_the_disk(tmp_path: Path) -> None:
    archive = tmp_path / "dicom" / "B.tar.gz"
    archive.parent.mkdir()
    zeros = b"\0" * (64 << 20)  # 64 MiB of zeros gzip to about 64 KiB: a 1000x expansion
    with tarfile.open(archive, "w:gz") as tar:
        add_tar_member(tar, "B/B/IM1", b"a real slice")
        add_tar_member(tar, "B/B/IM2", zeros)
        add_tar_member(tar, "B/B/IM3", b"never reached")
    assert archive.stat().st_size * 100 < len(zeros)
    dest = tmp_path / "unpack"
    dest.mkdir()
    with pytest.raises(
        InputError, match=r"B\.tar\.gz: expands to more than 100 times its size"
    ) as info:
        unpack_archive(archive, dest)
    assert info.value.check == "archive_bomb"
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert written < 1 << 20  # the bomb member itself was never written
