"""Resumable, verified downloads from the GDC data API, for the workflow's data-acquisition stage.

``GdcClient.download`` fetches one file (``GET {api}/data/{file_id}``) into ``<dest>.part`` and
renames it onto ``dest`` only once its size and md5 match the manifest, so a crash, a kill or a
network failure never leaves a file at ``dest`` that a rerun would trust. Two layers of retry:

* urllib3's ``Retry`` (mounted on the session) repeats a *request* that fails to connect, times
  out before the response headers, or gets a 429/5xx, with exponential backoff. 401/403/404 are
  final and raise at once.
* the client's own loop *resumes* a body cut mid-transfer (connection reset, read timeout) with
  ``Range: bytes=N-`` from the bytes already on disk, also across process restarts. A server that
  ignores ``Range`` (answers 200) is handled by truncating and restarting cleanly.

A file whose md5 does not match is deleted and downloaded again (``verify_attempts`` times in
all) before ``GdcIntegrityError`` is raised. ``GdcClient.download_many`` runs downloads on a
bounded thread pool and skips files already complete at their destination.

The token (see ``mmsurv.gdc.token``) is sent as ``X-Auth-Token`` to the data endpoint only,
dropped on redirects to another host, and never logged nor put in messages.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.util.retry import Retry

from mmsurv.gdc.redact import RedactingFilter, redact, register_secret, shorten
from mmsurv.gdc.token import HOW_TO_GET_A_TOKEN, TOKEN_HEADER
from mmsurv.io import md5_file

log = logging.getLogger(__name__)
log.addFilter(RedactingFilter())

DEFAULT_API = "https://api.gdc.cancer.gov"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PART_SUFFIX = ".part"
_FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
# Errors raised while reading a response body: the transfer broke and can be resumed.
_BODY_ERRORS = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.Timeout, Urllib3HTTPError, ConnectionError, TimeoutError)


class GdcError(RuntimeError):
    """Base class of every download/query failure; messages never contain the token (redacted here)."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(redact(message), *args)


class GdcAuthError(GdcError):
    """HTTP 401/403: no token for a controlled-access file, or the token was rejected."""


class GdcNotFoundError(GdcError):
    """HTTP 404: the file id is unknown to the GDC."""


class GdcHttpError(GdcError):
    """Any other unexpected HTTP answer (including 5xx once the retries are spent)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GdcTransferError(GdcError):
    """The server could not be reached, or the transfer kept breaking without progress."""


class GdcIntegrityError(GdcError):
    """The downloaded bytes never matched the expected size/md5 within the allowed attempts."""


class GdcCancelled(GdcError):
    """The download was cancelled (e.g. Ctrl-C while running on a thread pool)."""


class _Restart(Exception):
    """Internal: the server answered a range request inconsistently; restart from byte 0."""


@dataclass(frozen=True)
class GdcConfig:
    """Connection settings. ``token`` is excluded from ``repr`` so it never shows up in logs."""

    api: str = DEFAULT_API
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_size: int = 1024 * 1024
    retries: int = 5
    backoff_factor: float = 1.0
    backoff_max: float = 60.0
    verify_attempts: int = 2
    pool_size: int = 16
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "api", self.api.rstrip("/"))
        register_secret(self.token)
        if self.retries < 0 or self.verify_attempts < 1 or self.chunk_size < 1:
            raise ValueError("GdcConfig: retries >= 0, verify_attempts >= 1 and chunk_size >= 1 are required")

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeouts in the form requests expects."""
        return (self.connect_timeout, self.read_timeout)


@dataclass(frozen=True)
class FileSpec:
    """One file to download, as listed in a GDC manifest (md5/size may be unknown)."""

    file_id: str
    filename: str
    md5: str | None = None
    size: int | None = None
    origin: str = "the manifest"  # where the entry came from, for error messages


@dataclass(frozen=True)
class DownloadResult:
    """Outcome of one file in ``GdcClient.download_many``."""

    file_id: str
    path: Path
    status: Literal["downloaded", "skipped", "failed"]
    error: str | None = None


class _GdcSession(requests.Session):
    """A session that drops the GDC token when a redirect leaves the original host."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if self.should_strip_auth(response.request.url, prepared_request.url):
            prepared_request.headers.pop(TOKEN_HEADER, None)


def build_session(config: GdcConfig) -> requests.Session:
    """A session whose adapters retry connection errors, read timeouts and 429/5xx with backoff."""
    retry = Retry(
        total=config.retries, connect=config.retries, read=config.retries, status=config.retries,
        status_forcelist=RETRY_STATUSES, allowed_methods=frozenset({"GET", "HEAD", "POST"}),
        backoff_factor=config.backoff_factor, backoff_max=config.backoff_max,
        raise_on_status=False, respect_retry_after_header=True,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=config.pool_size)
    session = _GdcSession()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "mmsurv-gdc/0.1 (+requests)"
    return session


def part_path(dest: str | os.PathLike) -> Path:
    """Where the bytes of ``dest`` accumulate until they are verified."""
    dest = Path(dest)
    return dest.with_name(dest.name + PART_SUFFIX)


def is_complete(path: str | os.PathLike, size: int | None = None, md5: str | None = None) -> bool:
    """Whether ``path`` exists with the expected size and md5 (each checked only when known)."""
    path = Path(path)
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    return md5 is None or md5_file(path) == md5.lower()


class _Part:
    """The ``.part`` file of one download: bytes on disk plus a running md5 of exactly those bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = hashlib.md5(usedforsecurity=False)
        self.offset = 0
        if path.exists():
            self._hash_existing()

    def _hash_existing(self) -> None:
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(8 * 1024 * 1024), b""):
                self.hasher.update(block)
                self.offset += len(block)

    def reset(self) -> None:
        """Truncate to zero bytes (the server cannot continue from where we are)."""
        with open(self.path, "wb"):
            pass
        self.hasher = hashlib.md5(usedforsecurity=False)
        self.offset = 0

    def append(self, chunks: Iterable[bytes], on_bytes: Callable[[int], None],
               cancel: threading.Event) -> None:
        """Append ``chunks``; ``offset`` and the md5 always describe exactly the bytes written."""
        with open(self.path, "ab") as handle:
            for chunk in chunks:
                if cancel.is_set():
                    raise GdcCancelled(f"download of {self.path.name} cancelled")
                handle.write(chunk)
                self.hasher.update(chunk)
                self.offset += len(chunk)
                on_bytes(len(chunk))

    def digest(self) -> str:
        return self.hasher.hexdigest()


def _server_message(response: requests.Response, secret: str | None) -> str:
    """A short, token-free excerpt of the server's error body (GDC sends ``{"message": ...}``):
    the token is replaced in the WHOLE body before it is shortened."""
    try:
        body = response.json()
        text = str(body.get("message", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        text = response.text
    return shorten(" ".join(redact(text, secret).split()), 300)


class GdcClient:
    """Queries and downloads against one GDC API; safe to share between threads."""

    def __init__(self, config: GdcConfig | None = None, session: requests.Session | None = None) -> None:
        self.config = config or GdcConfig()
        self.session = session or build_session(self.config)
        self._cancel = threading.Event()

    def __repr__(self) -> str:
        return f"GdcClient(api={self.config.api!r}, token={'set' if self.config.token else 'none'})"

    def __enter__(self) -> GdcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()

    # ------------------------------------------------------------------ JSON queries
    def request_json(self, method: str, endpoint: str, *, params: dict[str, Any] | None = None,
                     json_body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a query to ``{api}/{endpoint}`` and return the decoded JSON object."""
        url = f"{self.config.api}/{endpoint.lstrip('/')}"
        try:
            response = self.session.request(method, url, params=params, json=json_body,
                                            timeout=self.config.timeout)
        except requests.RequestException as error:
            raise GdcTransferError(f"cannot query {url} (after {self.config.retries} retries): {error}") from error
        with response:
            if response.status_code >= 400:
                raise GdcHttpError(f"GDC query {method} {url} failed with HTTP {response.status_code}: "
                                   f"{_server_message(response, self.config.token)}", response.status_code)
            try:
                payload = response.json()
            except ValueError:
                raise GdcHttpError(f"GDC query {url} did not return JSON") from None
        if not isinstance(payload, dict):
            raise GdcHttpError(f"GDC query {url} returned {type(payload).__name__}, expected a JSON object")
        return payload

    # ------------------------------------------------------------------ single download
    def download(self, file_id: str, dest: str | os.PathLike, *, md5: str | None = None,
                 size: int | None = None, filename: str | None = None, progress: bool = True) -> Path:
        """Download ``file_id`` to ``dest`` (resuming ``<dest>.part``), verify size/md5, rename into place.

        Raises a ``GdcError`` subclass on failure; ``dest`` is then untouched.
        """
        dest = Path(dest)
        label = filename or dest.name
        with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  disable=not progress, dynamic_ncols=True, mininterval=0.5) as bar:
            return self._download(FileSpec(file_id, label, md5, size), dest, bar.update)

    def _download(self, spec: FileSpec, dest: Path, on_bytes: Callable[[int], None]) -> Path:
        """Fetch, verify, and retry whole-file on a bad digest; the core of ``download``."""
        _check_file_id(spec.file_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = part_path(dest)
        problem = ""
        for attempt in range(1, self.config.verify_attempts + 1):
            digest = self._fetch(spec, part, on_bytes)
            problem = _integrity_problem(part, digest, spec)
            if not problem:
                os.replace(part, dest)
                log.debug("file %s verified and saved as %s", spec.file_id, dest)
                return dest
            on_bytes(-part.stat().st_size)
            part.unlink(missing_ok=True)
            log.warning("file %s (%s): %s (download %d of %d)", spec.file_id, spec.filename, problem,
                        attempt, self.config.verify_attempts)
        raise GdcIntegrityError(
            f"file {spec.file_id} ({spec.filename}) failed verification after "
            f"{self.config.verify_attempts} download(s): {problem}; nothing was saved at {dest}"
        )

    def _fetch(self, spec: FileSpec, part_file: Path, on_bytes: Callable[[int], None]) -> str:
        """Bring ``part_file`` to the full content, resuming after broken transfers; return its md5."""
        part = _Part(part_file)
        on_bytes(part.offset)
        if spec.size is not None and part.offset > spec.size:
            log.info("file %s: %s is larger than the expected size; starting over", spec.file_id, part_file.name)
            on_bytes(-part.offset)
            part.reset()
        if spec.size is not None and part.offset == spec.size:
            log.info("file %s: %s already holds all %d bytes; verifying without download",
                     spec.file_id, part_file.name, spec.size)
            part_file.touch()  # a zero-byte file has nothing to download
            return part.digest()
        failures = 0
        while True:
            before = part.offset
            try:
                self._get_into(spec, part, on_bytes)
                return part.digest()
            except (_Restart, *_BODY_ERRORS) as error:
                failures = 0 if part.offset > before else failures + 1
                if failures > self.config.retries:
                    raise GdcTransferError(
                        f"download of file {spec.file_id} ({spec.filename}) kept failing without progress "
                        f"({failures} attempts in a row, {part.offset} bytes on disk): {_describe(error)}"
                    ) from error
                delay = self._backoff(max(failures, 1))
                log.warning("file %s (%s): transfer interrupted at byte %d (%s); resuming in %.2f s",
                            spec.file_id, spec.filename, part.offset, _describe(error), delay)
                time.sleep(delay)

    def _get_into(self, spec: FileSpec, part: _Part, on_bytes: Callable[[int], None]) -> None:
        """One GET of the missing bytes, appended to ``part``; raises on a broken body."""
        headers = {"Accept-Encoding": "identity"}
        if self.config.token:
            headers[TOKEN_HEADER] = self.config.token
        if part.offset:
            headers["Range"] = f"bytes={part.offset}-"
        url = f"{self.config.api}/data/{spec.file_id}"
        try:
            response = self.session.get(url, headers=headers, stream=True, timeout=self.config.timeout)
        except requests.RequestException as error:
            raise GdcTransferError(
                f"cannot download file {spec.file_id} ({spec.filename}) from {url} "
                f"after {self.config.retries} retries: {_describe(error)}"
            ) from error
        with response:
            if response.status_code == 416 and part.offset:
                self._check_416(spec, part, response, on_bytes)
                return
            self._raise_for_status(spec, response)
            self._align(spec, part, response, on_bytes)
            part.append(_body_chunks(response, self.config.chunk_size), on_bytes, self._cancel)

    def _align(self, spec: FileSpec, part: _Part, response: requests.Response,
               on_bytes: Callable[[int], None]) -> None:
        """Make the response and the bytes on disk line up: 206 from ``offset``, or 200 from 0."""
        if part.offset == 0:
            return
        if response.status_code == 200:
            log.info("file %s (%s): server ignored the Range request; restarting from byte 0", spec.file_id,
                     spec.filename)
            on_bytes(-part.offset)
            part.reset()
            return
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if response.status_code != 206 or not match or match.group(1) is None or int(match.group(1)) != part.offset:
            on_bytes(-part.offset)
            part.reset()
            raise _Restart(f"unexpected answer to Range bytes={part.offset}-: HTTP {response.status_code}, "
                           f"Content-Range {response.headers.get('Content-Range')!r}")

    def _check_416(self, spec: FileSpec, part: _Part, response: requests.Response,
                   on_bytes: Callable[[int], None]) -> None:
        """HTTP 416 to ``bytes=N-`` means N >= the file size: complete if N == size, else restart."""
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match and match.group(3) not in (None, "*") and int(match.group(3)) == part.offset:
            log.info("file %s (%s): the .part already holds the whole file (%d bytes)", spec.file_id, spec.filename,
                     part.offset)
            return
        on_bytes(-part.offset)
        part.reset()
        raise _Restart(f"range bytes={part.offset}- not satisfiable and the server's size differs")

    def _raise_for_status(self, spec: FileSpec, response: requests.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        detail = _server_message(response, self.config.token)
        what = f"file {spec.file_id} ({spec.filename})"
        if status in (401, 403):
            raise GdcAuthError(_auth_message(what, status, bool(self.config.token), detail))
        if status == 404:
            raise GdcNotFoundError(f"{what}: file id unknown to GDC (HTTP 404 from {response.url}); "
                                   "check the id against the manifest or the GDC portal")
        retried = f" after {self.config.retries} retries" if status in RETRY_STATUSES else ""
        raise GdcHttpError(f"{what}: GDC answered HTTP {status}{retried}: {detail}", status)

    def _backoff(self, failures: int) -> float:
        return min(self.config.backoff_max, self.config.backoff_factor * 2 ** (failures - 1))

    # ------------------------------------------------------------------ many downloads
    def download_many(self, files: Sequence[FileSpec], out_dir: str | os.PathLike, *, workers: int = 4,
                      progress: bool = True) -> list[DownloadResult]:
        """Download ``files`` into ``out_dir/<filename>`` on ``workers`` threads; one result per file.

        A file already complete at its destination (right size and md5) is skipped. Failures do
        not stop the other downloads; they are reported in the results (status ``"failed"``).
        """
        out_dir = Path(out_dir)
        _check_filenames(files)
        results: dict[str, DownloadResult] = {}
        todo = []
        for spec in files:
            dest = out_dir / spec.filename
            if is_complete(dest, spec.size, spec.md5):
                log.info("file %s: %s already complete, skipped", spec.file_id, dest)
                results[spec.file_id] = DownloadResult(spec.file_id, dest, "skipped")
            else:
                todo.append(spec)
        if todo:
            results.update(self._run_pool(todo, out_dir, max(1, workers), progress))
        return [results[spec.file_id] for spec in files]

    def _run_pool(self, todo: list[FileSpec], out_dir: Path, workers: int,
                  progress: bool) -> dict[str, DownloadResult]:
        sizes = [spec.size for spec in todo]
        total = sum(sizes) if None not in sizes else None  # type: ignore[arg-type]
        lock = threading.Lock()
        results: dict[str, DownloadResult] = {}
        self._cancel.clear()
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                  desc=f"{len(todo)} file(s)", dynamic_ncols=True, mininterval=0.5) as bar:
            def on_bytes(count: int) -> None:
                with lock:
                    bar.update(count)

            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gdc-download")
            try:
                futures = [pool.submit(self._download_one, spec, out_dir, on_bytes) for spec in todo]
                for future in as_completed(futures):
                    result = future.result()
                    results[result.file_id] = result
            except BaseException:
                self._cancel.set()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return results

    def _download_one(self, spec: FileSpec, out_dir: Path, on_bytes: Callable[[int], None]) -> DownloadResult:
        dest = out_dir / spec.filename
        try:
            self._download(spec, dest, on_bytes)
        except (GdcError, OSError) as error:
            log.error("file %s (%s) failed: %s", spec.file_id, spec.filename, error)
            return DownloadResult(spec.file_id, dest, "failed", str(error))
        log.info("file %s (%s) saved as %s", spec.file_id, spec.filename, dest)
        return DownloadResult(spec.file_id, dest, "downloaded")


def _body_chunks(response: requests.Response, chunk_size: int) -> Iterator[bytes]:
    """The body as it arrives (``read1``: whatever is there, up to ``chunk_size``), undecoded.

    Unlike ``iter_content``, a connection cut mid-chunk loses none of the bytes already received,
    so the resume offset is exactly what the server delivered.
    """
    raw = response.raw
    while chunk := raw.read1(chunk_size, decode_content=False):
        yield chunk


def _auth_message(what: str, status: int, token_given: bool, detail: str) -> str:
    if not token_given:
        return (f"{what}: GDC refused access (HTTP {status}) and no token was given; the file is "
                f"controlled-access and needs a GDC token: {HOW_TO_GET_A_TOKEN}. Server said: {detail}")
    return (f"{what}: GDC rejected the token (HTTP {status}): it is invalid or expired (tokens last "
            "30 days; download a fresh one from the GDC Data Portal), or your dbGaP authorisation does "
            f"not cover this file's project. Server said: {detail}")


def _integrity_problem(part: Path, digest: str, spec: FileSpec) -> str:
    """Empty when the .part matches the expected size and md5, else a sentence naming both values."""
    actual_size = part.stat().st_size
    if spec.size is not None and actual_size != spec.size:
        return f"size mismatch: expected {spec.size} bytes, got {actual_size} bytes (md5 {digest})"
    if spec.md5 is not None and digest != spec.md5.lower():
        return f"md5 mismatch: expected {spec.md5.lower()}, got {digest}"
    return ""


def _check_file_id(file_id: str) -> None:
    if not _FILE_ID.fullmatch(file_id):
        raise GdcError(f"invalid GDC file id {file_id!r}: expected a UUID such as 3f9a2a1e-…")


def _check_filenames(files: Sequence[FileSpec]) -> None:
    """Every destination name must be a plain, unique file name (no folders, no '..')."""
    seen: dict[str, str] = {}
    for spec in files:
        name = spec.filename
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise GdcError(f"file {spec.file_id}: unsafe file name {name!r} (from {spec.origin})")
        if name in seen:
            raise GdcError(f"files {seen[name]} and {spec.file_id} share the file name {name!r}")
        seen[name] = spec.file_id


def _describe(error: BaseException) -> str:
    text = shorten(" ".join(redact(error).split()), 300)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
