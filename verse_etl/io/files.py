"""Source files as they are found: plain files, or members of a zip archive read in place.

The VerSe releases ship as zips (``dataset-verse19training.zip`` ...; VerSe.md §1). Members are
read straight from the archive, never extracted: nothing is written beside the sources (no
doubled disk, no path-traversal risk from member names such as ``../x``), and each read streams
the member, so memory stays bounded. A member is named like :class:`zipfile.Path` names it, the
archive as if it were a folder: ``dataset-verse19training.zip/dataset-verse19training/rawdata/...``.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from verse_etl.errors import InputError

_BLOCK = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """A file on disk (``member`` None) or a member of the zip archive at ``path``."""

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        """The file name (last part of the member name for a zip member)."""
        return PurePosixPath(self.member).name if self.member else self.path.name

    @property
    def parts(self) -> tuple[str, ...]:
        """Folder parts leading to the file inside its archive (or on disk), name last."""
        return PurePosixPath(self.member).parts if self.member else self.path.parts

    def __str__(self) -> str:
        return f"{self.path}/{self.member}" if self.member else str(self.path)

    def relative(self, root: Path) -> str:
        """POSIX path relative to ``root`` (zip members below the archive's own relative path)."""
        try:
            base = self.path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            base = self.path.as_posix()
        return f"{base}/{self.member}" if self.member else base

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """Open for binary reading (a zip member is decompressed while it is read).

        Raises
        ------
        InputError
            If the file or the archive cannot be opened.
        """
        if self.member is None:
            try:
                f = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
            except OSError as e:
                raise InputError(self, f"cannot open ({e})", "check the file", check="read") from e
            with f:
                yield f
            return
        try:
            archive = zipfile.ZipFile(self.path)
            stream = archive.open(self.member)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise InputError(
                self, f"cannot open the zip member ({e})", "re-download the archive", check="read"
            ) from e
        with archive, stream:
            yield stream  # type: ignore[misc]

    def read_bytes(self) -> bytes:
        """The whole file (small files only: JSON, sidecars, spreadsheets)."""
        with self.open() as f:
            return f.read()

    def sha256(self) -> str:
        """sha256 of the file's (uncompressed) bytes, read in 1 MiB blocks."""
        digest = hashlib.sha256()
        with self.open() as f:
            while block := f.read(_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    def exists(self) -> bool:
        """True if the file (or the member inside its archive) is there."""
        if self.member is None:
            return self.path.is_file()
        try:
            with zipfile.ZipFile(self.path) as archive:
                archive.getinfo(self.member)
        except (OSError, KeyError, zipfile.BadZipFile):
            return False
        return True


def list_files(root: Path) -> tuple[list[SourceFile], list[InputError]]:
    """Every file below ``root``, zip archives opened and their members listed, in stable order.

    Folders and archives are walked in sorted order so that discovery is deterministic. Hidden
    files (``.DS_Store``, ``._*`` resource forks) and macOS ``__MACOSX`` folders are skipped. An
    archive that cannot be read is returned as a problem; the other files are still listed.
    """
    files: list[SourceFile] = []
    problems: list[InputError] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if _hidden(path.relative_to(root).parts):
            continue
        if path.suffix.lower() != ".zip":
            files.append(SourceFile(path))
            continue
        try:
            with zipfile.ZipFile(path) as archive:
                names = sorted(i.filename for i in archive.infolist() if not i.is_dir())
        except (OSError, zipfile.BadZipFile) as e:
            problems.append(
                InputError(path, f"not a readable zip archive ({e})", "re-download it", "read")
            )
            continue
        files.extend(SourceFile(path, n) for n in names if not _hidden(PurePosixPath(n).parts))
    return files, problems


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)
