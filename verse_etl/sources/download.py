"""Fetch one source file over HTTP(S): resumable, verified, published atomically.

A download goes to a partial file (``<dest>.part`` unless told otherwise); an interrupted one
resumes from the bytes already there with an HTTP Range request, and the file appears at
``dest`` only once its digests match. A mismatch deletes the partial file and raises: a corrupt
download is never mistaken for a source.

Resuming is safe only if the bytes already there and the ones still to come are of the same
upstream file: the partial file's ETag is kept beside it (``<part>.json``) and sent as
``If-Range``, so a server whose file changed answers with the whole new file instead of the
rest of the old one. Without a strong ETag the download resumes only when a digest is expected
(the digest then catches a mix); otherwise it starts again.

Why not DVC's own downloader: ``dvc import-url`` over HTTP reads the whole body in one request
without Range (checked against a loopback server, DVC 3.67), so a cut 7 GB zip starts from zero.
DVC records and checks what was fetched (:mod:`verse_etl.sources.dvc_imports`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from verse_etl.errors import InputError

_BLOCK = 1 << 20


@dataclass(frozen=True)
class Download:
    """One file to fetch: where from, where to, and the digests it must have (None: unknown)."""

    url: str
    dest: Path
    sha256: str | None = None
    md5: str | None = None
    part: Path | None = None  # the partial file; default <dest>.part

    @property
    def part_path(self) -> Path:
        """Where the bytes fetched so far are kept."""
        return self.part if self.part is not None else self.dest.with_name(self.dest.name + ".part")


@dataclass(frozen=True)
class DownloadResult:
    """What fetching one file did, and what the file is."""

    dest: Path
    bytes_fetched: int
    resumed_from: int
    skipped: bool  # already present with the expected digests
    sha256: str = ""
    md5: str = ""
    size: int = 0
    etag: str | None = None  # the server's ETag of the file (None: none sent, or skipped)


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file's bytes, read once in 1 MiB blocks."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _mismatch(item: Download, sha256: str, md5: str) -> str | None:
    if item.sha256 is not None and sha256 != item.sha256:
        return f"sha256 mismatch (expected {item.sha256}, got {sha256})"
    if item.md5 is not None and md5 != item.md5:
        return f"md5 mismatch (expected {item.md5}, got {md5})"
    return None


def _strong(etag: str | None) -> bool:
    return bool(etag) and not str(etag).startswith("W/")


def _read_state(state: Path, url: str) -> dict:
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("url") == url else {}


def fetch(item: Download, timeout: float = 60.0) -> DownloadResult:
    """Fetch one file (see the module docstring).

    Raises
    ------
    InputError
        If the server fails or the connection drops (the partial file is kept for the next run),
        or the finished file's digests differ from the expected ones (nothing is published).
    """
    dest = item.dest
    expected_any = item.sha256 is not None or item.md5 is not None
    if dest.exists() and expected_any:
        sha256, md5 = file_digests(dest)
        if _mismatch(item, sha256, md5) is None:
            return DownloadResult(dest, 0, 0, True, sha256, md5, dest.stat().st_size)
    part = item.part_path
    state_path = part.with_name(part.name + ".json")
    part.parent.mkdir(parents=True, exist_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = _read_state(state_path, item.url)
    start, headers = _resume(part.stat().st_size if part.exists() else 0, state, expected_any)
    fetched = 0
    expected: int | None = None
    etag: str | None = state.get("etag")
    connected = False
    try:
        with urllib.request.urlopen(
            urllib.request.Request(item.url, headers=headers), timeout=timeout
        ) as response:
            connected = True
            if start and response.status != 206:
                start = 0  # the server ignored Range, or the file changed (If-Range): restart
            if response.status != 206:
                etag = response.headers.get("ETag")
                state_path.write_text(json.dumps({"url": item.url, "etag": etag}), "utf-8")
            length = response.headers.get("Content-Length")
            expected = start + int(length) if length is not None else None
            with open(part, "ab" if start else "wb") as f:
                while block := response.read(_BLOCK):
                    f.write(block)
                    fetched += len(block)
    except urllib.error.HTTPError as e:
        if not (e.code == 416 and start):  # 416 on a resume: the part file is already complete
            raise InputError(
                item.url,
                f"download failed (HTTP {e.code} {e.reason})",
                "check the URL (or the mirror given as base URL)",
                check="download",
            ) from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        if not connected:
            raise InputError(
                item.url,
                f"cannot connect ({getattr(e, 'reason', e)})",
                "check the network, or the URL (a mirror can stand in: base URL)",
                check="download",
            ) from e
        raise InputError(
            item.url,
            f"download interrupted after {start + fetched} bytes ({e})",
            "run the fetch again: it resumes where it stopped",
            check="download",
        ) from e
    size, sha256, md5 = _publish(item, part, state_path, expected)
    return DownloadResult(dest, fetched, start, False, sha256, md5, size, etag)


def _resume(start: int, state: dict, digests_known: bool) -> tuple[int, dict[str, str]]:
    """Where to resume a part file of ``start`` bytes, and the request headers that do it.

    Resumed only when the rest can be known to belong to the same file: a strong ETag
    (``If-Range``), or digests to check the whole against; else from 0.
    """
    if start and _strong(state.get("etag")):
        return start, {"Range": f"bytes={start}-", "If-Range": state["etag"]}
    if start and digests_known:
        return start, {"Range": f"bytes={start}-"}
    return 0, {}


def _publish(
    item: Download, part: Path, state_path: Path, expected: int | None
) -> tuple[int, str, str]:
    """Check the finished part file and move it to ``item.dest``; its size, sha256 and md5.

    Raises
    ------
    InputError
        If it is shorter than announced (kept to resume) or its digests differ (deleted).
    """
    dest = item.dest
    size = part.stat().st_size
    if expected is not None and size < expected:
        # The connection dropped early: keep the part file for the next run to resume.
        raise InputError(
            item.url,
            f"download interrupted after {size} of {expected} bytes",
            "run the fetch again: it resumes where it stopped",
            check="download",
        )
    sha256, md5 = file_digests(part)
    problem = _mismatch(item, sha256, md5)
    if problem is not None:
        part.unlink()
        state_path.unlink(missing_ok=True)
        raise InputError(
            dest,
            problem,
            "the download was corrupt or the source changed upstream; fetch it again, or if "
            "the new upstream bytes are wanted, accept them with `dvc update` on its .dvc file",
            check="download_digest",
        )
    os.replace(part, dest)
    state_path.unlink(missing_ok=True)
    return size, sha256, md5
