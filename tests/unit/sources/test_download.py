"""Downloads against a real HTTP server on loopback: resume, sha256, atomic publication."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from verse_etl.errors import InputError
from verse_etl.sources.download import Download, fetch

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD with Range support; `cut` truncates the body to simulate a dropped link."""

    cut: int | None = None
    ranges: list[str | None] = []

    def do_GET(self) -> None:
        type(self).ranges.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut is not None:
            self.wfile.write(body[: type(self).cut])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server():
    _Handler.cut = None
    _Handler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/dataset-verse19training.zip"
    httpd.shutdown()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_fetch_verifies_and_publishes(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "raw" / "verse19.zip"
    result = fetch(Download(server, dest, SHA))
    assert dest.read_bytes() == PAYLOAD and result.bytes_fetched == len(PAYLOAD)
    assert not dest.with_name("verse19.zip.part").exists()
    again = fetch(Download(server, dest, SHA))
    assert again.skipped and len(_Handler.ranges) == 1  # not fetched twice


def test_interrupted_download_resumes_where_it_stopped(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "verse19.zip"
    _Handler.cut = 300_000
    with pytest.raises(InputError, match="download interrupted after"):
        fetch(Download(server, dest, SHA))
    assert not dest.exists()
    part = dest.with_name("verse19.zip.part")
    kept = part.stat().st_size
    assert 0 < kept <= 300_000
    _Handler.cut = None
    result = fetch(Download(server, dest, SHA))
    assert result.resumed_from == kept and result.bytes_fetched == len(PAYLOAD) - kept
    assert _Handler.ranges[-1] == f"bytes={kept}-"
    assert dest.read_bytes() == PAYLOAD


def test_wrong_checksum_is_refused_and_nothing_published(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "verse19.zip"
    with pytest.raises(InputError, match=r"verse19\.zip: sha256 mismatch \(expected 0{64}, got"):
        fetch(Download(server, dest, "0" * 64))
    assert not dest.exists() and not dest.with_name("verse19.zip.part").exists()


def test_unreachable_host_says_it_cannot_connect(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/dataset-verse19training.zip"
    with pytest.raises(InputError, match=r"cannot connect \(.*refused"):
        fetch(Download(url, tmp_path / "verse19.zip", SHA))
    assert not (tmp_path / "verse19.zip").exists()
