"""Fetched sources pinned as DVC URL imports: the ``.dvc`` file beside each one.

A fetched file gets the import stage ``dvc import-url URL`` would write: ``frozen: true``, one
dependency (the URL, with the server's ETag as ``checksum`` and its ``size``) and one output
(the file, with its ``md5``). It is saved with DVC's own ``commit``, which asks the server for
the ETag and size again, hashes the file and puts it in the DVC cache (so ``dvc push`` backs it
up and ``dvc status``/``dvc update`` work on it as on any import). The sha256 (with the md5 it
was computed with) and the catalog entry go to the file's ``meta`` (kept by DVC, not
interpreted; after a ``dvc update`` the md5s differ and the stale sha256 is not used).

Why not ``dvc import-url`` itself: it downloads without Range (no resume of a cut 7 GB zip),
and with ``--no-download --force`` over a file already fetched it deletes that file (DVC 3.67,
checked on loopback). Its upstream check is DVC's: :func:`upstream_changes` asks each import
dependency for its status, which is what ``dvc update`` decides on, without downloading.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from verse_etl.errors import InputError

META_KEY = "verse_etl"


@dataclass(frozen=True)
class ImportRecord:
    """What an import ``.dvc`` file pins: the URL and its ETag, and the bytes fetched from it."""

    dvc_file: Path
    path: Path  # the output, resolved
    url: str
    etag: str | None
    size: int | None
    md5: str | None
    sha256: str | None
    entry: str | None  # the catalog entry it was fetched for


def dvc_file_of(path: Path) -> Path:
    """The import ``.dvc`` file of a fetched file (beside it, as ``dvc import-url`` puts it)."""
    return path.with_name(path.name + ".dvc")


def read_import(dvc_file: Path) -> ImportRecord | None:
    """The record of an import ``.dvc`` file; None if there is none or it is not a URL import.

    Raises
    ------
    InputError
        If the file is not the YAML of a DVC stage.
    """
    if not dvc_file.is_file():
        return None
    try:
        data = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise InputError(
            dvc_file, f"not a readable .dvc file ({e})", "restore it from git", check="dvc_file"
        ) from e
    deps, outs = (data or {}).get("deps") or [], (data or {}).get("outs") or []
    if len(deps) != 1 or len(outs) != 1 or "://" not in str(deps[0].get("path", "")):
        return None
    dep, out = deps[0], outs[0]
    meta = ((data or {}).get("meta") or {}).get(META_KEY) or {}
    # The sha256 counts only for the bytes it was computed on: `dvc update` replaces the output
    # and its md5 but keeps the meta as it was.
    sha256 = meta.get("sha256") if meta.get("md5") == out.get("md5") else None
    return ImportRecord(
        dvc_file=dvc_file,
        path=(dvc_file.parent / str(out["path"])).resolve(),
        url=str(dep["path"]),
        etag=dep.get("checksum") or dep.get("etag"),
        size=dep.get("size"),
        md5=out.get("md5"),
        sha256=sha256,
        entry=meta.get("entry"),
    )


def find_imports(root: Path) -> list[ImportRecord]:
    """Every URL import ``.dvc`` file below ``root``, in path order."""
    found = []
    for dvc_file in sorted(root.rglob("*.dvc")) if root.is_dir() else []:
        record = read_import(dvc_file)
        if record is not None:
            found.append(record)
    return found


def _dvc_error(path: Path, what: str, e: Exception) -> InputError:
    return InputError(path, f"DVC could not {what} ({type(e).__name__}: {e})", check="dvc_import")


class Imports:
    """The DVC repository the imports are pinned in (opened once for many files)."""

    def __init__(self, project: Path) -> None:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        try:
            self.repo = Repo(str(project))
        except DvcException as e:
            raise InputError(
                project,
                f"not a DVC project ({e})",
                "run verse-etl fetch from the project root (git + `dvc init`)",
                check="dvc_import",
            ) from e
        self.project = project

    def close(self) -> None:
        """Release the repository's state database."""
        self.repo.close()

    def pin(
        self, path: Path, url: str, etag: str | None, sha256: str, md5: str, entry: str
    ) -> ImportRecord:
        """Write and commit the import ``.dvc`` file of ``path``, fetched from ``url``.

        Raises
        ------
        InputError
            If DVC fails, or the server's ETag or size changed since the bytes were fetched
            (the ``.dvc`` file is then removed: nothing half-pinned stays).
        """
        dvc_file = dvc_file_of(path)
        dep: dict[str, Any] = {"path": url}
        if etag:
            dep["checksum"] = etag
        stage = {
            "frozen": True,
            "deps": [dep],
            "outs": [{"path": path.name}],
            "meta": {META_KEY: {"entry": entry, "sha256": sha256, "md5": md5}},
        }
        tmp = dvc_file.with_name(dvc_file.name + ".tmp")
        tmp.write_text(yaml.safe_dump(stage, sort_keys=False), encoding="utf-8")
        tmp.replace(dvc_file)
        try:
            self.repo.commit(str(dvc_file), force=True)
        except Exception as e:  # DVC raises many types; the file must not stay half-pinned
            dvc_file.unlink(missing_ok=True)
            raise _dvc_error(path, "pin the fetched file", e) from e
        record = read_import(dvc_file)
        problem = None
        if record is None or record.md5 != md5:
            problem = (
                f"DVC hashed other bytes than were fetched (md5 {md5}, DVC {record and record.md5})"
            )
        elif etag and record.etag != etag:
            problem = (
                f"the upstream file changed while it was fetched (ETag {etag}, now {record.etag})"
            )
        elif record.size is not None and record.size != path.stat().st_size:
            problem = (
                f"upstream size {record.size} differs from the local file's "
                f"{path.stat().st_size} bytes"
            )
        if problem:
            dvc_file.unlink(missing_ok=True)
            raise InputError(path, problem, "fetch it again", check="dvc_import")
        assert record is not None
        return record

    def workspace_matches(self, record: ImportRecord) -> bool:
        """True if the pinned file is in the workspace with the pinned bytes (DVC's status, which
        reuses its hash cache: a 7 GB zip is not read again when its mtime and inode are the same).
        """
        if record.md5 is None or not record.path.is_file():
            return False
        # DVC warns that a frozen stage's dependencies are not checked: that is the point here
        # (the URL is checked by upstream_changes), so the warning would only be noise.
        quiet = logging.getLogger("dvc.repo.status")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            return not self.repo.status(targets=[str(record.dvc_file)])
        except Exception as e:
            raise _dvc_error(record.path, "check the workspace", e) from e
        finally:
            quiet.setLevel(level)

    def upstream_changes(
        self, records: Sequence[ImportRecord]
    ) -> list[tuple[ImportRecord, str | None, str]]:
        """For each import: (record, the upstream ETag now, "unchanged" | "changed" | reason).

        Nothing is downloaded: DVC asks each URL for its ETag and size (HEAD), as ``dvc update``
        does before deciding to fetch.
        """
        results = []
        for record in records:
            try:
                (stage,) = self.repo.stage.collect(str(record.dvc_file))
                dep = stage.deps[0]
                status = dep.status()
                now = dep.get_hash().value
                results.append((record, now, "changed" if status else "unchanged"))
            except Exception as e:
                results.append((record, None, f"unreachable ({type(e).__name__}: {e})"))
        return results
