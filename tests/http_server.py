"""A loopback HTTP server for download tests: files from a dict, strong ETags, HEAD, byte
ranges with If-Range, and a switch that cuts the next response short (a dropped link)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Served:
    """What the server serves (path -> bytes) and what it was asked (method, path, headers)."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent, then close
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    base_url: str = ""

    def gets(self) -> list[tuple[str, dict[str, str]]]:
        """The GET requests so far: (path, headers)."""
        return [(p, h) for m, p, h in self.requests if m == "GET"]


def etag_of(body: bytes) -> str:
    """The strong ETag the server sends for ``body`` (like S3: the quoted md5)."""
    return f'"{hashlib.md5(body).hexdigest()}"'


def _handler(served: Served) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _respond(self, send_body: bool) -> None:
            path = self.path.split("?")[0]
            served.requests.append((self.command, path, dict(self.headers.items())))
            body = served.files.get(path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag, start = etag_of(body), 0
            wanted = self.headers.get("Range")
            if wanted and self.headers.get("If-Range") not in (None, etag):
                wanted = None  # If-Range names another version: send the whole file
            if wanted:
                start = int(wanted.split("=")[1].split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if not send_body:
                return
            cut = served.cut_after.pop(path, None) if self.command == "GET" else None
            if cut is not None:
                self.wfile.write(body[start : start + cut])
                self.wfile.flush()
                self.close_connection = True
                return
            # DVC's HTTP info reads only the headers of some GETs and hangs up
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body[start:])

        def handle(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                super().handle()

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve(served: Served) -> Iterator[Served]:
    """Serve ``served`` on a free loopback port until the block ends; sets ``served.base_url``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
