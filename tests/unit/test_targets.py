"""Publishing to an fsspec target (fsspec's own in-memory filesystem): a store becomes visible
only with its root metadata, which goes last; stale objects go; a half-uploaded store is not
taken for a finished one."""

from __future__ import annotations

import posixpath
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from verse_etl.errors import OutputPathError
from verse_etl.targets import POINTER_NAME, STORE_ROOT_META, Target


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


# -- one generation per build, switched by a pointer written last -----------------------------

_TABLE_FILES = (
    ("scans", "source=verse/release=r1"),
    ("scans", "source=verse/release=r2"),
    ("vertebrae", "source=verse/release=r1"),
    ("vertebrae", "source=verse/release=r2"),
)


def _tables(folder: Path, ids: list[str], tag: str) -> Path:
    """A tables folder of two tables (their sort keys only), two partitions each, and a card."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, partition in _TABLE_FILES:
        (folder / name / partition).mkdir(parents=True, exist_ok=True)
        rows = {"scan_id": [f"{i}-{partition[-2:]}" for i in ids]}
        if name == "vertebrae":
            rows["label"] = [20] * len(ids)
        pq.write_table(pa.table(rows), folder / name / partition / "part-0.parquet")
    (folder / "DATASET_CARD.md").write_text(f"# build {tag}\n")
    return folder


def _seen(target: Target) -> tuple[list[str], list[str], str]:
    """What a reader of the build sees: the catalog's two views and the card of the generation
    the pointer names."""
    from verse_etl.read.catalog import connect

    con = connect(target.url, comments=False)
    try:
        scans = [r[0] for r in con.sql("SELECT scan_id FROM scans").fetchall()]
        vertebrae = [r[0] for r in con.sql("SELECT DISTINCT scan_id FROM vertebrae").fetchall()]
    finally:
        con.close()
    card = target.fs.cat_file(
        target.path(posixpath.join(target.published_root(), "tables", "DATASET_CARD.md"))
    )
    return scans, sorted(vertebrae), card.decode()


def _expected(ids: list[str], tag: str) -> tuple[list[str], list[str], str]:
    scans = sorted(f"{i}-{r}" for i in ids for r in ("r1", "r2"))
    return scans, scans, f"# build {tag}\n"


def _record(monkeypatch, log: list[tuple[str, str]], fail_at: int | None = None) -> None:
    """Note every write and delete of the memory filesystem in order; with ``fail_at``, the
    put of that index raises (an upload cut off: a real exception from the real put path)."""
    put, pipe, rm = MemoryFileSystem.put_file, MemoryFileSystem.pipe_file, MemoryFileSystem.rm

    def recording_put(self, lpath, rpath, *args, **kwargs):
        if fail_at is not None and sum(op == "put" for op, _ in log) == fail_at:
            raise ConnectionResetError(f"{rpath}: connection reset (injected)")
        log.append(("put", rpath))
        return put(self, lpath, rpath, *args, **kwargs)

    def recording_pipe(self, path, *args, **kwargs):
        log.append(("put", path))
        return pipe(self, path, *args, **kwargs)

    def recording_rm(self, path, *args, **kwargs):
        log.append(("rm", path))
        return rm(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "put_file", recording_put)
    monkeypatch.setattr(MemoryFileSystem, "pipe_file", recording_pipe)
    monkeypatch.setattr(MemoryFileSystem, "rm", recording_rm)


def test_the_pointer_is_written_after_every_table_object_and_before_any_delete(
    target: Target, tmp_path: Path, monkeypatch
) -> None:
    old = target.publish_generation(_tables(tmp_path / "old" / "tables", ["a", "b"], "old"))
    log: list[tuple[str, str]] = []
    _record(monkeypatch, log)
    new = target.publish_generation(_tables(tmp_path / "new" / "tables", ["a", "c"], "new"))
    assert new != old and new.startswith("generations/")
    puts = [path for op, path in log if op == "put"]
    assert puts[-1] == target.path(POINTER_NAME)
    assert len(puts) == len(_TABLE_FILES) + 2  # the partitions, the card, the pointer
    assert all(p.startswith(target.path(f"{new}/tables/")) for p in puts[:-1])
    pointer_at = log.index(("put", target.path(POINTER_NAME)))
    removed = [i for i, (op, path) in enumerate(log) if op == "rm" and old in path]
    assert removed and min(removed) > pointer_at  # the old generation goes after the switch
    assert not target.fs.exists(target.path(old))
    assert _seen(target) == _expected(["a", "c"], "new")
    # The same tables again: nothing is uploaded, the pointer stays.
    log.clear()
    assert target.publish_generation(tmp_path / "new" / "tables") == new
    assert not [path for op, path in log if op == "put"]


def test_a_publish_cut_after_any_object_leaves_readers_the_whole_old_dataset(
    target: Target, tmp_path: Path, monkeypatch
) -> None:
    old_tables = _tables(tmp_path / "old" / "tables", ["a", "b"], "old")
    new_tables = _tables(tmp_path / "new" / "tables", ["a", "c"], "new")
    objects = len(_TABLE_FILES) + 1
    for k in range(objects + 1):  # k objects uploaded, then the (k+1)th put fails (pointer last)
        target.remove("generations")
        old = target.publish_generation(old_tables)
        log: list[tuple[str, str]] = []
        with monkeypatch.context() as patch:
            _record(patch, log, fail_at=k)
            if k < objects:  # a table object's put fails
                with pytest.raises(ConnectionResetError):
                    target.publish_generation(new_tables)
            else:  # every table object is up; the pointer write itself fails
                patch.setattr(
                    MemoryFileSystem,
                    "pipe_file",
                    lambda *a, **kw: (_ for _ in ()).throw(ConnectionResetError("cut")),
                )
                with pytest.raises(ConnectionResetError):
                    target.publish_generation(new_tables)
        assert sum(op == "put" for op, _ in log) == k
        assert not [path for op, path in log if op == "rm"], "nothing is deleted before the switch"
        assert target.published_root() == old
        assert _seen(target) == _expected(["a", "b"], "old"), k
        # The next publish finishes the job: the whole new dataset, the old one and the
        # leftover of the cut upload gone.
        new = target.publish_generation(new_tables)
        assert _seen(target) == _expected(["a", "c"], "new"), k
        assert target.list("generations") == [new]


def test_a_build_published_before_pointers_is_read_then_replaced(
    target: Target, tmp_path: Path
) -> None:
    target.put_tree(_tables(tmp_path / "legacy" / "tables", ["a"], "legacy"), "tables")
    assert target.published_root() == ""
    assert _seen(target) == _expected(["a"], "legacy")
    new = target.publish_generation(_tables(tmp_path / "new" / "tables", ["b"], "new"))
    assert _seen(target) == _expected(["b"], "new")
    assert not target.exists("tables") and target.list("generations") == [new]


@pytest.mark.parametrize("pointer", [b"not json", b'{"generation": "../../x"}', b"{}"])
def test_a_pointer_that_names_no_generation_is_refused(target: Target, pointer: bytes) -> None:
    target.fs.pipe_file(target.path(POINTER_NAME), pointer)
    with pytest.raises(OutputPathError, match="not a generation pointer"):
        target.published_root()
