"""Where a build's outputs go: a local folder, or an fsspec URL (``s3://bucket/prefix``, ``gs://``,
``memory://`` ...) so that workers on many machines write to one object store.

Cases are built in a local work folder exactly as for a local build; what a case produced (its
stores, then its case result) is then published to the target object by object. Object stores
have no rename, so the order carries the safety instead:

- a Zarr store is visible to readers only once its root ``zarr.json`` exists, and that object is
  uploaded last (after every shard and array metadata object);
- a case result is uploaded after its stores, so a result never points at a missing store; on
  the next build, an unchanged case whose result and stores are on the target is not rebuilt;
- the tables and the card of a build are uploaded under a new generation prefix
  (``generations/<id>/tables/...``, ``<id>`` a digest of their bytes), then one small pointer
  object (``CURRENT``) naming the generation is written last (one PUT); readers follow the
  pointer (:meth:`Target.published_root`), so they see the whole old dataset or the whole new
  one, never new ``scans`` beside old ``vertebrae``; the other generations are deleted only
  after the pointer names the new one.

Credentials and endpoints come from the usual places of each filesystem (for s3fs: the AWS
environment variables, ``AWS_ENDPOINT_URL`` for S3-compatible servers, or ``~/.aws``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import fsspec

from verse_etl.errors import OutputPathError
from verse_etl.paths import TABLES_DIR

STORE_ROOT_META = "zarr.json"
POINTER_NAME = "CURRENT"
"""The object naming the published generation (``{"generation": "<id>"}``), written last."""
GENERATIONS_DIR = "generations"
_GENERATION_ID = re.compile(r"[0-9a-f]{16,64}")


def generation_id(folder: Path) -> str:
    """A digest of the names and bytes of every file below ``folder``: the same tables give the
    same generation (a rebuild that changed nothing uploads nothing)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        digest.update(f"{name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()[:32]


def generation_root(generation: str) -> str:
    """The prefix (relative to the build root) holding ``tables/`` of ``generation``."""
    return f"{GENERATIONS_DIR}/{generation}"


def read_pointer(fs: fsspec.AbstractFileSystem, root: str) -> str:
    """The root holding the published ``tables/`` of the build at ``root`` in ``fs``, relative to
    it: ``generations/<id>`` as the pointer names it, or ``""`` for a build published before
    pointers existed (its ``tables/`` sits at the root).

    Raises
    ------
    OutputPathError
        If the pointer does not name a generation (it never becomes a path as it stands).
    """
    pointer = posixpath.join(root.rstrip("/"), POINTER_NAME)
    if not fs.exists(pointer):
        return ""
    raw = fs.cat_file(pointer)
    try:
        generation = json.loads(raw)["generation"]
    except (ValueError, TypeError, KeyError):
        generation = None
    if not isinstance(generation, str) or not _GENERATION_ID.fullmatch(generation):
        raise OutputPathError(
            f'{pointer}: not a generation pointer (expected {{"generation": "<hex id>"}}, '
            f"got {raw[:80]!r}); delete it and build again to rewrite it"
        )
    return generation_root(generation)


def is_url(location: str | Path) -> bool:
    """True for an fsspec URL other than a plain local path (``file://`` counts as local).

    Examples
    --------
    >>> is_url("s3://bucket/build"), is_url("data/build"), is_url("file:///tmp/build")
    (True, False, False)
    """
    text = str(location)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class Target:
    """The output location of a build, addressed by paths relative to the build root."""

    url: str

    @cached_property
    def _fs_root(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.url)
        return fs, root.rstrip("/")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem of the target."""
        return self._fs_root[0]

    @property
    def root(self) -> str:
        """The build root inside :attr:`fs` (bucket/prefix for object stores)."""
        return self._fs_root[1]

    def path(self, rel: str | Path) -> str:
        """Full path in :attr:`fs` of ``rel`` (relative to the build root).

        The object-store twin of :func:`verse_etl.paths.ensure_inside`: every read, write and
        delete of a target goes through here, so none reaches outside the build root.

        Raises
        ------
        OutputPathError
            If ``rel`` is absolute or climbs out of the root (``..``), or holds NUL.
        """
        text = Path(rel).as_posix() if str(rel) else ""
        if not text or text == ".":
            return self.root
        norm = posixpath.normpath(text)
        if text.startswith("/") or norm == ".." or norm.startswith("../") or "\0" in text:
            raise OutputPathError(
                f"{self.url}/{text}: path outside the build root (expected a path relative to "
                f"{self.url}, got {text!r}); refusing to read, write or delete it"
            )
        return posixpath.join(self.root, norm)

    def exists(self, rel: str | Path) -> bool:
        """True if the object (or, for a store, its root metadata) exists."""
        return bool(self.fs.exists(self.path(rel)))

    def store_exists(self, rel: str | Path) -> bool:
        """True if the Zarr store ``rel`` is complete (its root metadata is published last)."""
        return self.exists(posixpath.join(Path(rel).as_posix(), STORE_ROOT_META))

    def fetch(self, rel: str | Path, local: Path) -> bool:
        """Copy object ``rel`` to ``local`` if it exists; return whether it did."""
        try:
            data = self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        return True

    def fetch_tree(self, rel: str | Path, local: Path) -> list[Path]:
        """Copy every object below ``rel`` into the folder ``local``; return the local files."""
        base = self.path(rel)
        files = []
        for name in sorted(self.fs.find(base)):
            dest = local / posixpath.relpath(name, base)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.fs.cat_file(name))
            files.append(dest)
        return files

    def put_file(self, local: Path, rel: str | Path) -> None:
        """Upload one file (one PUT: readers see the old object or the new one, never a part)."""
        self.fs.put_file(str(local), self.path(rel))

    def put_store(self, local: Path, rel: str | Path) -> int:
        """Upload the Zarr store folder ``local`` to ``rel``, its root ``zarr.json`` last.

        Objects of an older version of the store that the new one does not have are deleted
        after the upload. Returns the number of objects uploaded.
        """
        return len(self.put_tree(local, rel, last=STORE_ROOT_META))

    def put_tree(self, local: Path, rel: str | Path, last: str | None = None) -> list[str]:
        """Upload every file below ``local`` to ``rel`` (``last``, a relative name, after all
        others); delete objects there it does not have. Returns the uploaded names in order."""
        names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        names.sort(key=lambda name: name == last)  # stable: only ``last`` moves, to the end
        for name in names:
            self.put_file(local / name, posixpath.join(Path(rel).as_posix(), name))
        self._delete_others(rel, set(names))
        return names

    def _delete_others(self, rel: str | Path, keep: set[str]) -> None:
        base = self.path(rel)
        for name in sorted(self.fs.find(base)):
            if posixpath.relpath(name, base) not in keep:
                self.fs.rm_file(name)

    def published_root(self) -> str:
        """The prefix (relative to the build root) whose ``tables/`` readers must read: see
        :func:`read_pointer`."""
        return read_pointer(self.fs, self.root)

    def publish_generation(self, tables: Path) -> str:
        """Publish the local tables folder ``tables`` as one generation; return its root.

        Every object goes below ``generations/<id>/tables`` first, then the pointer is written
        (one PUT), and only then are the other generations (and the ``tables/`` of a build
        published before pointers) deleted. An upload cut anywhere leaves the pointer, and so
        the readers, on the old generation; the next publish removes the leftover.
        """
        generation = generation_id(tables)
        root = generation_root(generation)
        if self.published_root() != root:
            self.put_tree(tables, posixpath.join(root, TABLES_DIR))
            self.fs.pipe_file(
                self.path(POINTER_NAME), json.dumps({"generation": generation}).encode()
            )
        for rel in self.list(GENERATIONS_DIR):
            if rel != root:
                self.remove(rel)
        self.remove(TABLES_DIR)  # the tables of a build published before pointers
        return root

    def list(self, rel: str | Path, depth: int = 1) -> list[str]:
        """Paths (relative to the build root) of the objects and folders ``depth`` levels below."""
        base = self.path(rel)
        if not self.fs.exists(base):
            return []
        found = self.fs.find(base, maxdepth=depth, withdirs=True)
        return sorted(
            posixpath.relpath(p, self.root)
            for p in found
            if p.rstrip("/") != base and posixpath.relpath(p, base).count("/") == depth - 1
        )

    def remove(self, rel: str | Path) -> None:
        """Delete an object or everything below a prefix (missing is fine); never the root."""
        path = self.path(rel)
        if path == self.root:
            raise OutputPathError(
                f"{self.url}: refusing to delete the build root itself (expected a path below it)"
            )
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
