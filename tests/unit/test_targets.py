"""Publishing to an fsspec target (fsspec's own in-memory filesystem): a store becomes visible
only with its root metadata, which goes last; stale objects go; a half-uploaded store is not
taken for a finished one."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from verse_etl.targets import STORE_ROOT_META, Target


@pytest.fixture
def target():
    url = "memory://verse-etl-test/build"
    fs = fsspec.filesystem("memory")
    if fs.exists("/verse-etl-test"):
        fs.rm("/verse-etl-test", recursive=True)
    yield Target(url)
    if fs.exists("/verse-etl-test"):
        fs.rm("/verse-etl-test", recursive=True)


def _store(folder: Path, shards: int) -> Path:
    for i in range(shards):
        (folder / "0" / "c").mkdir(parents=True, exist_ok=True)
        (folder / "0" / "c" / f"{i}").write_bytes(bytes([i]) * 100)
    (folder / "0" / "zarr.json").write_text("{}")
    (folder / STORE_ROOT_META).write_text('{"zarr_format": 3}')
    return folder


def test_store_root_metadata_is_uploaded_last(target: Target, tmp_path: Path, monkeypatch) -> None:
    order: list[str] = []
    put = MemoryFileSystem.put_file

    def recording(self, lpath, rpath, *args, **kwargs):  # the real put, with its order noted
        order.append(rpath)
        return put(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "put_file", recording)
    store = _store(tmp_path / "a.zarr", shards=3)
    assert target.put_store(store, "volumes/verse/a.zarr") == 5
    assert order[-1].endswith("volumes/verse/a.zarr/zarr.json")
    assert len(order) == 5 and not any(p.endswith("a.zarr/zarr.json") for p in order[:-1])
    assert target.store_exists("volumes/verse/a.zarr")


def test_a_store_without_root_metadata_is_not_there(target: Target, tmp_path: Path) -> None:
    store = _store(tmp_path / "b.zarr", shards=2)
    target.put_store(store, "volumes/verse/b.zarr")
    target.fs.rm_file(target.path("volumes/verse/b.zarr/zarr.json"))  # upload cut before the end
    assert not target.store_exists("volumes/verse/b.zarr")


def test_republishing_removes_objects_the_new_version_lacks(target: Target, tmp_path: Path) -> None:
    target.put_store(_store(tmp_path / "v1.zarr", shards=4), "s.zarr")
    target.put_store(_store(tmp_path / "v2.zarr", shards=2), "s.zarr")
    shards = sorted(p.rsplit("/", 1)[-1] for p in target.fs.find(target.path("s.zarr/0/c")))
    assert shards == ["0", "1"]
    (tmp_path / "tables" / "t" / "source=a").mkdir(parents=True)
    (tmp_path / "tables" / "t" / "source=a" / "part-0.parquet").write_bytes(b"x")
    target.put_tree(tmp_path / "tables", "tables")
    (tmp_path / "tables" / "t" / "source=a" / "part-0.parquet").unlink()
    (tmp_path / "tables" / "t" / "source=b").mkdir()
    (tmp_path / "tables" / "t" / "source=b" / "part-0.parquet").write_bytes(b"y")
    target.put_tree(tmp_path / "tables", "tables")
    assert target.list("tables/t", depth=2) == ["tables/t/source=b/part-0.parquet"]


def test_fetch_of_a_missing_object_is_false(target: Target, tmp_path: Path) -> None:
    assert not target.fetch("cases/verse/x.json", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
