"""A local, GDC-shaped HTTP server for tests and benchmarks of the download client (not for production).

It serves ``GET /data/{file_id}`` (with or without ``Range`` support) and the ``files`` query
endpoint (``POST``/``GET /files`` with GDC filters, fields and ``size``/``from`` paging) from
in-memory files, on 127.0.0.1 with an ephemeral port, in a background thread. Each file can be
given faults to reproduce what goes wrong on real networks: a connection cut after N bytes, a
burst of 503s, a corrupted body, 403/404, a stall longer than the client's read timeout, a
throttled transfer. Every request is recorded (method, path, headers, body) so tests can assert
what the client sent, e.g. the ``Range`` header of a resumed transfer.

Used by ``tests/gdc`` and ``bench/download.py``::

    with GdcTestServer() as server:
        served = server.add_file(b"...", filename="a.svs", faults=Faults(cut_after=1000))
        GdcClient(GdcConfig(api=server.url)).download(served.file_id, "a.svs", md5=served.md5)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_SEND_CHUNK = 64 * 1024
DEFAULT_METADATA = {
    "cases.project.project_id": "TCGA-TEST",
    "data_type": "Slide Image",
    "experimental_strategy": "Diagnostic Slide",
    "data_format": "SVS",
    "access": "open",
}


@dataclass
class Faults:
    """What a served file does wrong. Counts refer to the file's requests in arrival order."""

    status: int | None = None          # answer every request with this status (401, 403, 404, 500...)
    message: str | None = None         # ...with this JSON message ("{token}": the X-Auth-Token received)
    fail_statuses: list[int] = field(default_factory=list)  # the first requests get these statuses, in order
    cut_after: int | None = None       # close the connection after this many body bytes...
    cut_times: int = 1                 # ...on this many requests
    stall_before_headers: bool = False  # stall before answering (instead of mid-body)...
    stall_after: int | None = None     # ...or after this many body bytes, then close the connection
    stall_seconds: float = 3.0
    stall_times: int = 1
    corrupt_times: int = 0             # serve a body with one byte flipped on this many requests (-1: always)
    ignore_range: bool = False         # answer 200 with the whole file to Range requests
    throttle_bps: float | None = None  # send at most this many bytes per second


@dataclass
class ServedFile:
    """One file served under ``/data/{file_id}``; ``token`` set makes it controlled-access."""

    file_id: str
    filename: str
    data: bytes | memoryview
    md5: str
    state: str = "released"
    token: str | None = None
    faults: Faults = field(default_factory=Faults)
    metadata: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_METADATA))
    request_count: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def record(self, name: str) -> Any:
        """The value of a GDC field for the ``files`` endpoint."""
        values = {"file_id": self.file_id, "id": self.file_id, "file_name": self.filename,
                  "md5sum": self.md5, "file_size": self.size, "state": self.state, **self.metadata}
        return values.get(name)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class GdcTestServer:
    """The server; start with ``with GdcTestServer() as server:`` or ``start()``/``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.files: dict[str, ServedFile] = {}
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.gdc = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add_file(self, data: bytes | memoryview, *, file_id: str | None = None, filename: str | None = None,
                 faults: Faults | None = None, token: str | None = None, md5: str | None = None,
                 **metadata: str) -> ServedFile:
        """Serve ``data``; ``md5`` is computed unless given (pass a wrong one to fake a bad manifest)."""
        file_id = file_id or str(uuid.uuid4())
        served = ServedFile(
            file_id=file_id, filename=filename or f"{file_id}.svs", data=data,
            md5=md5 or hashlib.md5(data, usedforsecurity=False).hexdigest(), token=token,
            faults=faults or Faults(),
        )
        served.metadata.update({key.replace("__", "."): value for key, value in metadata.items()})
        with self.lock:
            self.files[file_id] = served
        return served

    def requests_for(self, file_id: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == f"/data/{file_id}"]

    def start(self) -> GdcTestServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="gdc-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> GdcTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GdcTestServer/1"

    @property
    def gdc(self) -> GdcTestServer:
        return self.server.gdc  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch(b"")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self._dispatch(self.rfile.read(length) if length else b"")

    def _dispatch(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        with self.gdc.lock:
            self.gdc.requests.append(RecordedRequest(self.command, parts.path, dict(self.headers.items()), body))
        try:
            if parts.path.startswith("/data/"):
                self._data(parts.path[len("/data/"):])
            elif parts.path.rstrip("/") == "/files":
                self._files(body, parse_qs(parts.query))
            else:
                self._json(404, {"message": f"no endpoint {parts.path}"})
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    # ------------------------------------------------------------------ /files
    def _files(self, body: bytes, query: dict[str, list[str]]) -> None:
        params: dict[str, Any] = json.loads(body) if body else {k: v[-1] for k, v in query.items()}
        filters = params.get("filters") or {}
        if isinstance(filters, str):
            filters = json.loads(filters)
        fields = [f for f in str(params.get("fields", "file_id")).split(",") if f]
        size, start = int(params.get("size", 10)), int(params.get("from", 0))
        with self.gdc.lock:
            matching = [f for f in self.gdc.files.values() if _matches(f, filters)]
        matching.sort(key=lambda f: f.file_id)
        page = matching[start:start + size]
        hits = [{"id": f.file_id, **{name: f.record(name) for name in fields}} for f in page]
        pages = max(1, -(-len(matching) // size)) if size else 1
        pagination = {"count": len(hits), "total": len(matching), "size": size, "from": start,
                      "sort": str(params.get("sort", "")), "page": start // size + 1 if size else 1, "pages": pages}
        self._json(200, {"data": {"hits": hits, "pagination": pagination}, "warnings": {}})

    # ------------------------------------------------------------------ /data/{id}
    def _data(self, file_id: str) -> None:
        with self.gdc.lock:
            served = self.gdc.files.get(file_id)
            if served is not None:
                served.request_count += 1
                number = served.request_count
        if served is None:
            self._json(404, {"message": f"File {file_id} not found"})
            return
        faults = served.faults
        if self._refused(served, number):
            return
        if faults.stall_before_headers and number <= faults.stall_times:
            self.gdc.stopping.wait(faults.stall_seconds)
        data = _corrupted(served.data) if faults.corrupt_times and (
            faults.corrupt_times < 0 or number <= faults.corrupt_times) else served.data
        start = self._range_start(served)
        if start is None:
            return
        self._send_body(data, start, faults, number)

    def _refused(self, served: ServedFile, number: int) -> bool:
        faults = served.faults
        if faults.status is not None:
            message = faults.message or f"fault: status {faults.status}"
            message = message.replace("{token}", self.headers.get("X-Auth-Token", ""))
            self._json(faults.status, {"message": message})
            return True
        if number <= len(faults.fail_statuses):
            status = faults.fail_statuses[number - 1]
            self._json(status, {"message": f"fault: status {status} (request {number})"})
            return True
        if served.token is not None:
            given = self.headers.get("X-Auth-Token")
            if given is None:
                self._json(403, {"message": "Requested file is controlled-access; no token provided"})
                return True
            if given != served.token:
                self._json(401, {"message": "Invalid or expired token"})
                return True
        return False

    def _range_start(self, served: ServedFile) -> int | None:
        """The first byte to send (0 without a usable Range), or None after answering 416."""
        header = self.headers.get("Range")
        if not header or served.faults.ignore_range:
            self._start_response(200, len(served.data), None)
            return 0
        match = _RANGE.fullmatch(header.strip())
        start = int(match.group(1)) if match else 0
        if start >= len(served.data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(served.data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self._start_response(206, len(served.data) - start, f"bytes {start}-{len(served.data) - 1}/{len(served.data)}")
        return start

    def _start_response(self, status: int, length: int, content_range: str | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()

    def _send_body(self, data: bytes | memoryview, start: int, faults: Faults, number: int) -> None:
        view = memoryview(data)
        cut = faults.cut_after if faults.cut_after is not None and number <= faults.cut_times else None
        stall = faults.stall_after if faults.stall_after is not None and number <= faults.stall_times else None
        chunk = min(_SEND_CHUNK, max(1024, int(faults.throttle_bps / 20))) if faults.throttle_bps else _SEND_CHUNK
        sent, position, began = 0, start, time.monotonic()
        while position < len(view):
            limit = min(x for x in (cut, stall, sent + chunk) if x is not None)
            if limit <= sent:
                self._interrupt(stall is not None and stall <= sent, faults)
                return
            piece = view[position:position + (limit - sent)]
            self.wfile.write(piece)
            sent += len(piece)
            position += len(piece)
            if faults.throttle_bps:
                ahead = began + sent / faults.throttle_bps - time.monotonic()
                if ahead > 0 and self.gdc.stopping.wait(ahead):
                    return

    def _interrupt(self, stalled: bool, faults: Faults) -> None:
        """Cut the connection (after stalling first if it is a stall fault)."""
        self.wfile.flush()
        if stalled:
            self.gdc.stopping.wait(faults.stall_seconds)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _corrupted(data: bytes | memoryview) -> bytes:
    damaged = bytearray(data)
    if damaged:
        damaged[len(damaged) // 2] ^= 0xFF
    return bytes(damaged)


def _matches(served: ServedFile, node: dict[str, Any]) -> bool:
    """Evaluate a GDC filter tree ('and'/'or' of 'in'/'=') against a served file."""
    if not node:
        return True
    op, content = node.get("op"), node.get("content")
    if op in ("and", "or"):
        results = (_matches(served, child) for child in content)
        return all(results) if op == "and" else any(results)
    if op in ("in", "="):
        values = content["value"] if isinstance(content["value"], list) else [content["value"]]
        return served.record(content["field"]) in values
    raise ValueError(f"test server: unsupported filter op {op!r}")
