"""Write hostile archive members for tests: tar and zip entries with any name, type and size."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

BOMB_BYTES = 16 << 20
"""Zeros in a bomb member: 16 MiB deflate to about 16 KiB, a 1000x expansion."""


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes = b"x", **attrs: object) -> None:
    """Add a member named ``name`` as given (``../x``, ``/abs``); ``attrs`` set type, linkname..."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def add_zip_member(
    archive: zipfile.ZipFile,
    name: str,
    data: bytes = b"x",
    *,
    symlink_to: str | None = None,
    mode: int = stat.S_IFREG | 0o644,
    deflate: bool = False,
) -> None:
    """Add a member named ``name`` as given, of Unix file type and permissions ``mode``; a
    symbolic link if ``symlink_to`` is set (as ``zip --symlinks`` writes it: the target is the
    data)."""
    info = zipfile.ZipInfo(name, date_time=(2020, 6, 1, 0, 0, 0))
    info.create_system = 3  # Unix: external_attr holds st_mode in its high 16 bits
    info.external_attr = ((stat.S_IFLNK | 0o777) if symlink_to is not None else mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    archive.writestr(info, symlink_to.encode() if symlink_to is not None else data)


def corrupt_zip_member(archive: Path, member: str) -> None:
    """Zero 64 bytes in the middle of a stored member's data, so that its CRC no longer matches."""
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo(member)
    data = bytearray(archive.read_bytes())
    at = info.header_offset
    name_len, extra_len = (int.from_bytes(data[at + o : at + o + 2], "little") for o in (26, 28))
    middle = at + 30 + name_len + extra_len + info.compress_size // 2
    data[middle : middle + 64] = bytes(64)
    archive.write_bytes(bytes(data))
