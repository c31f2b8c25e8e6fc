"""Fetch source files from configured URLs: resumable, verified by sha256, published atomically.

A download goes to ``<dest>.part``; an interrupted one resumes from the bytes already there
(HTTP Range), and the file appears at ``dest`` only once its sha256 matches. A mismatch deletes
the partial file and raises: a corrupt download is never mistaken for a source.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from verse_etl.errors import InputError
from verse_etl.hashing import sha256_file

_BLOCK = 1 << 20


@dataclass(frozen=True)
class Download:
    """One file to fetch: where from, where to, and the sha256 it must have."""

    url: str
    dest: Path
    sha256: str


@dataclass(frozen=True)
class DownloadResult:
    """What fetching one file did."""

    dest: Path
    bytes_fetched: int
    resumed_from: int
    skipped: bool  # already present with the right sha256


def fetch(item: Download, timeout: float = 60.0) -> DownloadResult:
    """Fetch one file (see the module docstring).

    Raises
    ------
    InputError
        If the server fails, or the finished file's sha256 differs from ``item.sha256``.
    """
    dest = item.dest
    if dest.exists() and sha256_file(dest) == item.sha256:
        return DownloadResult(dest, 0, 0, skipped=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(
        item.url, headers={"Range": f"bytes={start}-"} if start else {}
    )
    fetched = 0
    expected: int | None = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if start and response.status != 206:
                start = 0  # the server ignored Range: start again from byte 0
            length = response.headers.get("Content-Length")
            expected = start + int(length) if length is not None else None
            with open(part, "ab" if start else "wb") as f:
                while block := response.read(_BLOCK):
                    f.write(block)
                    fetched += len(block)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing left to fetch: the part file is complete
            pass
        else:
            raise InputError(
                item.url,
                f"download failed (HTTP {e.code} {e.reason})",
                "check the URL",
                check="download",
            ) from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise InputError(
            item.url,
            f"download interrupted after {start + fetched} bytes ({e})",
            "run the fetch again: it resumes where it stopped",
            check="download",
        ) from e
    if expected is not None and part.stat().st_size < expected:
        # The connection dropped early: keep the part file for the next run to resume.
        raise InputError(
            item.url,
            f"download interrupted after {part.stat().st_size} of {expected} bytes",
            "run the fetch again: it resumes where it stopped",
            check="download",
        )
    actual = sha256_file(part)
    if actual != item.sha256:
        part.unlink()
        raise InputError(
            dest,
            f"sha256 mismatch (expected {item.sha256}, got {actual})",
            "the download was corrupt or the source changed; fetch it again or update the sha256",
            check="download_sha256",
        )
    os.replace(part, dest)
    return DownloadResult(dest, fetched, start, skipped=False)
