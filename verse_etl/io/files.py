"""Source files as they are found: plain files, or members of a zip archive read in place.

The VerSe releases ship as zips (``dataset-verse19training.zip`` ...; VerSe.md §1). Members are
read straight from the archive, never extracted: nothing is written beside the sources (no
doubled disk), and each read streams the member, so memory stays bounded. A member is named like
:class:`zipfile.Path` names it, the archive as if it were a folder:
``dataset-verse19training.zip/dataset-verse19training/rawdata/...``.

Members no release holds are refused when the archive is listed, each with a record naming
``<archive>!/<member>`` (as :mod:`verse_etl.io.archives` names refused tar members), and the
rest of the archive is used: unsafe names (absolute, or with ``..``: they would land outside
the folder if the zip were unpacked, and say nothing reliable about release and split), links
and other special entries (the Unix file type in ``external_attr``: a link's data is its target's
path, not a file), and decompression bombs: a member whose declared size is more than
:data:`~verse_etl.io.archives.MAX_RATIO` times its compressed size (larger than 1 MiB). The
declared size bounds what a read returns (:mod:`zipfile` stops there and checks the CRC), so a
member that lies about it is a read error, never a larger stream.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from verse_etl.errors import InputError, is_transient, one_line
from verse_etl.io.archives import MAX_RATIO, MEMBER_SEPARATOR, bomb_error, safe_member_path
from verse_etl.stopping import check_stop

_BLOCK = 1 << 20
_SMALL_MEMBER = 1 << 20
"""Members up to this size are never called bombs (a tiny repetitive JSON may deflate 100x)."""


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
            If the file or the archive cannot be opened, or (check ``not_regular_file``) the
            path is a FIFO, socket, device or broken link: refused without being opened (opening
            a FIFO blocks until someone writes to it).
        """
        require_regular(self.path)
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
            try:
                yield stream  # type: ignore[misc]  # a ZipExtFile: a binary stream, typed IO[bytes]
            except (zipfile.BadZipFile, zlib.error) as e:  # bad CRC, corrupt deflate data
                raise InputError(
                    self,
                    f"cannot read the zip member ({type(e).__name__}: {e})",
                    "the archive is corrupt; re-download it",
                    check="read",
                ) from e

    def read_bytes(self, limit: int | None = None) -> bytes:
        """The whole file (small files only: JSON, sidecars, spreadsheets).

        Raises
        ------
        InputError
            With check ``too_large`` if the file holds more than ``limit`` bytes (never read
            past ``limit + 1``).
        """
        return read_bounded(self, limit)

    def sha256(self) -> str:
        """sha256 of the file's (uncompressed) bytes, read in 1 MiB blocks."""
        digest = hashlib.sha256()
        with self.open() as f:
            while block := f.read(_BLOCK):
                check_stop()
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


def read_bounded(path: Path | SourceFile, limit: int | None = None) -> bytes:
    """The bytes of a small file, refused (check ``too_large``) beyond ``limit`` bytes.

    At most ``limit + 1`` bytes are read, so a huge or endless file costs no more than that.
    """
    source = path if isinstance(path, SourceFile) else SourceFile(Path(path))
    with source.open() as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise InputError(
            source,
            f"file is larger than checks.limits.max_json_bytes (expected at most {limit} "
            "bytes); not read",
            "check that it is the file its name says, or raise the limit",
            check="too_large",
        )
    return data


def special_file_error(path: Path) -> InputError | None:
    """Why ``path`` must not be opened, or None for a regular file (or a link to one).

    Only ``stat`` is used (it never opens the file): a FIFO would block the reader for ever, a
    device may be endless, a socket cannot be read, a broken link has nothing behind it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not os.path.lexists(path):
            return None  # missing: the caller's own "not found" is clearer
        kind = "a broken link"
    except OSError:
        return None  # unreadable: the caller's read reports it
    else:
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            return None
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else f"a special file (mode {oct(mode)})"
        )
    return InputError(
        path,
        f"is {kind}, not a regular file; not opened",
        "replace it with the file it stands for, or remove it",
        check="not_regular_file",
    )


def require_regular(path: Path) -> None:
    """Raise :func:`special_file_error`'s error, if any."""
    error = special_file_error(path)
    if error is not None:
        raise error


def list_files(root: Path) -> tuple[list[SourceFile], list[InputError]]:
    """Every file below ``root``, zip archives opened and their members listed, in stable order.

    Entries that are not regular files (FIFOs, sockets, devices, broken links) are returned as
    problems (check ``not_regular_file``) without being opened. Folders and archives are walked in sorted order so that discovery is deterministic. Hidden
    files (``.DS_Store``, ``._*`` resource forks) and macOS ``__MACOSX`` folders are skipped. An
    archive that cannot be read is returned as a problem; the other files are still listed.
    """
    files: list[SourceFile] = []
    problems: list[InputError] = []
    for path in sorted(root.rglob("*")):
        if _hidden(path.relative_to(root).parts) or path.is_dir():
            continue
        special = special_file_error(path)
        if special is not None:
            problems.append(special)  # a FIFO, socket, device or broken link: named, not opened
            continue
        if path.suffix.lower() != ".zip":
            files.append(SourceFile(path))
            continue
        try:
            with zipfile.ZipFile(path) as archive:
                members = sorted(
                    (i for i in archive.infolist() if not i.is_dir()), key=lambda i: i.filename
                )
        except Exception as e:
            # zipfile raises more than BadZipFile for a damaged central directory (ValueError,
            # struct.error, UnicodeDecodeError, ...): one archive never stops discovery.
            if is_transient(e):
                raise
            problems.append(
                InputError(
                    path,
                    f"not a readable zip archive ({type(e).__name__}: {one_line(str(e), 200)})",
                    "re-download it",
                    "read",
                )
            )
            continue
        for info in members:
            refusal = refuse_member(path, info)
            if refusal is not None:
                problems.append(refusal)
            elif not _hidden(PurePosixPath(info.filename).parts):
                files.append(SourceFile(path, info.filename))
    return files, problems


def refuse_member(archive: Path, info: zipfile.ZipInfo) -> InputError | None:
    """Why a zip member must not be read (see the module docstring), or None if it may.

    Returns
    -------
    InputError or None
        Named ``<archive>!/<member>``; check ``archive_member`` (unsafe name, link, special
        entry) or ``archive_bomb``.
    """
    name = f"{archive}{MEMBER_SEPARATOR}{info.filename}"
    fix = "the member was not read; repack the archive with plain relative file names"
    mode = info.external_attr >> 16  # st_mode of zips made on Unix; 0 from other systems
    if safe_member_path(info.filename) is None:
        problem = "has an unsafe name (absolute, or with '..' leading outside the archive)"
    elif stat.S_ISLNK(mode):
        problem = f"is a symbolic link (mode {oct(mode)}; links are refused)"
    elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        problem = f"is not a regular file (mode {oct(mode)}: a device, FIFO or special entry)"
    elif info.file_size > max(MAX_RATIO * info.compress_size, _SMALL_MEMBER):
        return bomb_error(
            name,
            info.compress_size,
            MAX_RATIO,
            f"{info.file_size} bytes declared",
            "the member was not read; check where the archive comes from",
        )
    else:
        return None
    return InputError(name, problem, fix, check="archive_member")


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)
