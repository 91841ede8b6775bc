"""A real HTTP server on 127.0.0.1 for download tests: byte ranges, and faults on request.

Serves registered bytes by path with ``Range: bytes=N-`` support (206 + Content-Range), and can
answer a path with 404, with an HTML page, without a Content-Length (the body ends at close), or
by dropping the connection part-way through the body (once), or by holding the second half of
the body until the test lets it go (so another client overlaps the download, however slowly
it starts). Every request's path and Range header is recorded. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class LocalServer:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.faults: dict[str, str] = {}
        self.drops: dict[str, int] = {}
        self.held: dict[str, threading.Event] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                server.requests.append((self.command, path, rng))
                fault = server.faults.get(path)
                if fault == "404" or path not in server.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "html":
                    page = b"<!DOCTYPE html><html><body>Quota exceeded</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    if body:
                        self.wfile.write(page)
                    return
                data, headers = server.files[path]
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if fault == "no-length":  # the body ends when the connection closes
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not body:
                    return
                cut = server.drops.pop(path, None) if self.command == "GET" else None
                if cut is not None:  # send part of the body, then drop the connection
                    self.wfile.write(data[start:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                gate = server.held.get(path)
                if gate is not None:  # half the body, then the rest once the test sets the gate
                    half = start + (len(data) - start) // 2
                    self.wfile.write(data[start:half])
                    self.wfile.flush()
                    gate.wait(60)
                    start = half
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, path: str, data: bytes, **headers: str) -> str:
        self.files[path] = (data, headers)
        return self.base + path

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection to a host other than 127.0.0.1 fails the test (autouse where imported)."""
    real = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to reach {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def server():
    with LocalServer() as s:
        yield s
