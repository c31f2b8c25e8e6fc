"""Per-study ``.tar.gz`` archives, unpacked safely into a temporary folder.

Layout (``shared/specs/MOSMED.md`` §3.2): a newer MosMed distribution ships each study as
``dicom/<Folder>.tar.gz``, whose members unpack to ``<Folder>/<Folder>/<files>`` when the archive
is extracted in place. Every regular member is a file of the study, whatever its nesting.

Only regular files are written, each through ``extractfile`` into the destination folder under a
name checked beforehand: absolute names, ``..`` components, names that would resolve outside the
destination, links (symbolic and hard), devices, FIFOs and repeated names are refused with a
record and never written. Members are streamed one at a time (``r|gz``), so memory stays bounded
by the copy buffer whatever the archive size. A decompression bomb is stopped before it fills the
disk: the sizes declared in the tar headers (exact, since tar data is read sequentially) may add up
to at most ``max_ratio`` times the archive's own size.
"""

from __future__ import annotations

import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from verse_etl.errors import InputError

ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar.gz", ".tgz")
"""File name endings of study archives."""

MAX_RATIO = 100.0
"""Most bytes unpacked per byte of archive. CT DICOM gzips 2-5x; a bomb expands 1000x and more."""

MEMBER_SEPARATOR = "!/"
"""Joins an archive's path and a member name in records: ``dicom/<Folder>.tar.gz!/<member>``."""


@dataclass(frozen=True)
class UnpackedFile:
    """One regular member written to disk."""

    path: Path  # where it was written (inside the destination folder)
    member: str  # its name inside the archive


@dataclass
class Unpacked:
    """What :func:`unpack_archive` wrote and refused."""

    files: list[UnpackedFile]
    refused: list[InputError]


def archive_stem(path: Path) -> str | None:
    """The study folder an archive stands for, or None if the name is not an archive's.

    Examples
    --------
    >>> archive_stem(Path("dicom/RLADD01000006301_RLSDD01000006282.tar.gz"))
    'RLADD01000006301_RLSDD01000006282'
    >>> archive_stem(Path("dicom/notes.txt")) is None
    True
    """
    for suffix in ARCHIVE_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a member may be written to, or None if its name is unsafe.

    Examples
    --------
    >>> safe_member_path("Study/Study/IM0001")
    PurePosixPath('Study/Study/IM0001')
    >>> [safe_member_path(n) for n in ("../evil", "/etc/passwd", "a/../../b", "", "./")]
    [None, None, None, None, None]
    """
    if not name or name.startswith(("/", "\\")) or "\x00" in name:
        return None
    path = PurePosixPath(name)
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or ":" in parts[0]:
        return None
    return PurePosixPath(*parts)


def _unreadable(archive: Path, detail: str) -> InputError:
    return InputError(
        archive,
        f"cannot read the study archive ({detail})",
        "re-download or repack the archive (expected a complete .tar.gz)",
        check="archive_read",
    )


def bomb_error(
    path: Path | str,
    size: int,
    max_ratio: float,
    detail: str,
    fix: str = "check where the archive comes from; nothing of it was kept",
) -> InputError:
    """The ``archive_bomb`` error of an archive (or a zip member) of ``size`` compressed bytes."""
    return InputError(
        path,
        f"expands to more than {max_ratio:g} times its size ({size} bytes; {detail}): "
        "a decompression bomb or a corrupt header",
        fix,
        check="archive_bomb",
    )


def _check_gzip(archive: Path, budget: float, max_ratio: float) -> None:
    """Inflate the whole archive once, output discarded, before anything is unpacked.

    tarfile's stream mode stops silently at a truncated end that falls on a member boundary, and
    a bomb is cheapest to stop before any file is written. Memory stays at one 1 MiB piece.
    """
    inflate = zlib.decompressobj(31)
    produced = 0
    try:
        with open(archive, "rb") as f:
            data = f.read(1 << 20)
            while data and not inflate.eof:
                produced += len(inflate.decompress(data, 1 << 20))
                if produced > budget:
                    raise bomb_error(
                        archive, archive.stat().st_size, max_ratio, f"{produced}+ bytes inflated"
                    )
                data = inflate.unconsumed_tail or f.read(1 << 20)
    except (zlib.error, OSError) as e:
        raise _unreadable(archive, f"{type(e).__name__}: {e}") from e
    if not inflate.eof:
        raise _unreadable(archive, f"the gzip stream ends early, after {produced} bytes")


def _member_path(
    member: tarfile.TarInfo, dest: Path, dest_resolved: Path, seen: set[PurePosixPath]
) -> PurePosixPath | str:
    """Where a non-folder member goes below ``dest``, or why it is refused (a sentence)."""
    if member.issym() or member.islnk():
        return f"is a link to {member.linkname!r} (links are refused)"
    if not member.isreg():
        return "is not a regular file (device, FIFO or special member)"
    relative = safe_member_path(member.name)
    if relative is None:
        return "has an unsafe name (absolute, or with '..' leading outside the archive)"
    if not (dest / relative).resolve().is_relative_to(dest_resolved):
        return "would be written outside the unpack folder"
    if relative in seen:
        return "appears twice in the archive (the first copy was kept)"
    return relative


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> bool:
    """Copy a regular member's bytes to ``target`` (a new file); False if it has no data.

    Raises
    ------
    EOFError
        If the member ends early: tarfile's stream mode returns short data at a truncated end,
        silently.
    """
    source = tar.extractfile(member)
    if source is None:  # pragma: no cover - regular members always have data
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with source, open(target, "xb") as out:
        shutil.copyfileobj(source, out, length=1 << 20)
        copied = out.tell()
    if copied != member.size:
        raise EOFError(f"member {member.name!r} ends after {copied} of {member.size} bytes")
    return True


def unpack_archive(archive: Path, dest: Path, max_ratio: float = MAX_RATIO) -> Unpacked:
    """Write every safe regular member of a ``.tar.gz`` archive below ``dest``.

    Parameters
    ----------
    archive
        The study archive.
    dest
        An empty folder (a temporary one: the caller deletes it).
    max_ratio
        Most bytes unpacked per byte of archive (see the module docstring).

    Returns
    -------
    Unpacked
        Files written (path and member name) and members refused, each as an
        :class:`InputError` naming ``<archive>!/<member>`` and what was wrong.

    Raises
    ------
    InputError
        If the archive cannot be read to its end (not gzip, not tar, truncated), or would expand
        to more than ``max_ratio`` times its size (check ``archive_bomb``): nothing from it
        should be trusted then.
    """
    budget = max_ratio * max(archive.stat().st_size, 1)
    _check_gzip(archive, budget, max_ratio)
    unpacked = 0
    dest_resolved = dest.resolve()
    written: list[UnpackedFile] = []
    refused: list[InputError] = []
    seen: set[PurePosixPath] = set()

    def refuse(member: str, problem: str) -> None:
        refused.append(
            InputError(
                f"{archive}{MEMBER_SEPARATOR}{member}",
                problem,
                "the member was not unpacked; repack the archive with plain relative file names",
                check="archive_member",
            )
        )

    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                if member.isdir():
                    continue
                relative = _member_path(member, dest, dest_resolved, seen)
                if isinstance(relative, str):
                    refuse(member.name, relative)
                    continue
                seen.add(relative)
                unpacked += member.size
                if unpacked > budget:
                    raise bomb_error(
                        archive,
                        archive.stat().st_size,
                        max_ratio,
                        f"{unpacked} bytes declared up to {member.name!r}",
                    )
                target = dest / relative
                if not _extract(tar, member, target):
                    refuse(member.name, "has no data")
                    continue
                written.append(UnpackedFile(path=target, member=str(relative)))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise _unreadable(archive, f"{type(e).__name__}: {e}") from e
    written.sort(key=lambda f: f.member)
    return Unpacked(files=written, refused=refused)
