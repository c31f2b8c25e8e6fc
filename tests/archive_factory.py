"""Write hostile archive members for tests: tar and zip entries with any name, type and size."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile

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
    deflate: bool = False,
) -> None:
    """Add a member named ``name`` as given; a symbolic link (Unix mode in ``external_attr``, as
    ``zip --symlinks`` writes it, the target as the data) if ``symlink_to`` is set."""
    info = zipfile.ZipInfo(name, date_time=(2020, 6, 1, 0, 0, 0))
    info.create_system = 3  # Unix: external_attr holds st_mode in its high 16 bits
    mode = (stat.S_IFLNK | 0o777) if symlink_to is not None else (stat.S_IFREG | 0o644)
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    archive.writestr(info, symlink_to.encode() if symlink_to is not None else data)
