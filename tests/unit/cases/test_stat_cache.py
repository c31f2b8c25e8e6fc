"""Source-file digests reused while the stat is unchanged, and hashed again whenever it is not."""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from verse_etl.cases.stat_cache import SETTLE_NS, DigestCache
from verse_etl.io.files import SourceFile


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _settle() -> None:
    """Let the files written so far age past the settle time (a fresh file is not recorded)."""
    time.sleep(SETTLE_NS / 1e9 + 0.02)


def _hashed_once(cache_file: Path, file: Path | SourceFile) -> str:
    """Hash ``file`` through a fresh cache and save it; return the digest."""
    cache = DigestCache(cache_file)
    digest = cache.sha256(file)
    assert (cache.hashed, cache.reused) == (1, 0)
    cache.save()
    return digest


def _second_look(cache_file: Path, file: Path | SourceFile, rehash: bool = False) -> DigestCache:
    cache = DigestCache(cache_file, rehash)
    cache.sha256(file)
    return cache


def test_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    f = tmp_path / "ct.nii.gz"
    f.write_bytes(b"voxels" * 1000)
    _settle()
    cache_file = tmp_path / "digests.json"
    assert _hashed_once(cache_file, f) == _sha(b"voxels" * 1000)
    again = DigestCache(cache_file)
    assert again.sha256(f) == _sha(b"voxels" * 1000)
    assert (again.hashed, again.reused) == (0, 1)
    # --rehash reads it whatever the cache says
    assert _second_look(cache_file, f, rehash=True).hashed == 1


@pytest.mark.parametrize("change", ["size", "mtime", "restored mtime", "inode"])
def test_any_stat_change_forces_a_rehash(tmp_path: Path, change: str) -> None:
    f = tmp_path / "ct.nii.gz"
    f.write_bytes(b"a" * 100)
    _settle()
    cache_file = tmp_path / "digests.json"
    _hashed_once(cache_file, f)
    st = f.stat()
    if change == "size":
        f.write_bytes(b"a" * 101)
    elif change == "mtime":
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    elif change == "restored mtime":
        # Same size, other bytes, mtime set back (touch -d, cp -p): the ctime still moves.
        f.write_bytes(b"b" * 100)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (f.stat().st_size, f.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    else:
        # Replaced by another file (same size and mtime): another inode.
        other = tmp_path / "other"
        other.write_bytes(b"c" * 100)
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, f)
        assert f.stat().st_ino != st.st_ino
    cache = DigestCache(cache_file)
    assert cache.sha256(f) == _sha(f.read_bytes())
    assert (cache.hashed, cache.reused) == (1, 0)


def test_fresh_or_foreign_entries_are_not_trusted(tmp_path: Path) -> None:
    f = tmp_path / "centroids.json"
    f.write_bytes(b"{}")
    cache_file = tmp_path / "digests.json"
    # Hashed right after it was written: a second write in the same timestamp tick would not
    # show in the stat, so it is not recorded.
    _hashed_once(cache_file, f)
    assert json.loads(cache_file.read_text())["entries"] == {}
    _settle()
    _hashed_once(cache_file, f)
    assert _second_look(cache_file, f).reused == 1
    # A cache written by other code (another identity of verse_etl.cases.stat_cache) is ignored.
    data = json.loads(cache_file.read_text())
    cache_file.write_text(json.dumps({**data, "code": "0" * 64}))
    assert _second_look(cache_file, f).hashed == 1
    cache_file.write_text("not json")
    assert _second_look(cache_file, f).hashed == 1


def test_zip_member_follows_its_archive(tmp_path: Path) -> None:
    archive = tmp_path / "dataset-verse19training.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("rawdata/sub-verse004/ct.nii.gz", b"ct bytes")
    _settle()
    member = SourceFile(archive, "rawdata/sub-verse004/ct.nii.gz")
    cache_file = tmp_path / "digests.json"
    assert _hashed_once(cache_file, member) == _sha(b"ct bytes")
    assert _second_look(cache_file, member).reused == 1
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("rawdata/sub-verse005/ct.nii.gz", b"more")
    assert _second_look(cache_file, member).hashed == 1


def test_a_cached_digest_is_given_only_while_the_stat_is_the_same(tmp_path: Path) -> None:
    """``cached_sha256`` (the reuse checks: nothing read or recorded) answers as ``sha256``
    would reuse: for a plain path, a path as text and a zip member, then None once the file
    changes, for a file it never hashed, and for a file gone."""
    f, other = tmp_path / "ct.dcm", tmp_path / "other.dcm"
    f.write_bytes(b"a" * 100)
    other.write_bytes(b"b")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("s/1.dcm", b"member")
    member = SourceFile(archive, "s/1.dcm")
    _settle()
    cache_file = tmp_path / "digests.json"
    cache = DigestCache(cache_file)
    digests = [cache.sha256(f), cache.sha256(member)]
    cache.save()
    again = DigestCache(cache_file)
    assert [again.cached_sha256(f), again.cached_sha256(member)] == digests
    assert again.cached_sha256(str(tmp_path / "." / "ct.dcm")) == digests[0]
    assert again.cached_sha256(SourceFile(archive, "s/2.dcm")) is None
    assert again.cached_sha256(other) is None
    assert (again.hashed, again.reused) == (0, 0)
    os.utime(f, ns=(time.time_ns(), time.time_ns()))
    assert again.cached_sha256(f) is None
    f.unlink()
    assert again.cached_sha256(f) is None
