"""Crash-safe file output shared by every stage.

A stage never leaves a half-written file where a rerun would trust it: it writes to a temporary
file in the destination folder, flushes it to disk (``fsync``) and renames it into place only when
the content is complete (then syncs the folder, so the rename survives a crash too). A write that
fails because the disk is full (or the quota reached) removes the temporary file and raises
:class:`DiskFullError`, one line naming the destination; once space is freed a rerun completes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

MD5_CHUNK = 8 * 1024 * 1024


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` if the block succeeds.

    The temporary file keeps ``dest``'s suffix (or ``suffix``) so libraries that pick a format from
    the extension (pandas, tifffile, h5py, matplotlib) behave as for the final name. On any
    exception the temporary file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=f".tmp{suffix if suffix is not None else dest.suffix}",
        dir=dest.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual permissions
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, dest)
        _fsync(dest.parent)
    except BaseException as error:
        full = isinstance(error, Exception) and is_disk_full(error, dest.parent)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if full:
            raise DiskFullError(errno.ENOSPC, f"no space left on the device of {dest}: nothing was written "
                                              f"({type(error).__name__}); free space and rerun", str(dest)) from None
        raise


class DiskFullError(OSError):
    """A write failed for want of space (ENOSPC / EDQUOT); ``filename`` is the destination."""

    def __str__(self) -> str:
        return self.strerror


# Below this many free bytes, a write error of a library that hides the OS error (torch's zip writer
# raises RuntimeError "file write failed") is taken for a full disk.
NEARLY_FULL_BYTES = 1 << 20


def is_disk_full(error: BaseException, folder: str | os.PathLike) -> bool:
    """Whether ``error`` (or what it wraps) is ENOSPC/EDQUOT, or a write failure on a nearly full filesystem."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen)
        if "No space left on device" in text or "Disk quota exceeded" in text or "errno = 28" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF):  # folders on some filesystems cannot be synced
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_symlink(target: str | os.PathLike, link: str | os.PathLike) -> None:
    """Create (or replace) the symbolic link ``link`` → ``target`` atomically."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.lnk")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.fspath(target), tmp)
    os.replace(tmp, link)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block: one process at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def try_exclusive_lock(path: str | os.PathLike) -> Iterator[bool]:
    """Take an exclusive ``flock`` on ``path`` if nobody holds it; yield whether it was taken."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def md5_file(path: str | os.PathLike, chunk_size: int = MD5_CHUNK) -> str:
    """Hex md5 digest of a file, read in chunks so memory stays flat for multi-GB slides."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def write_tsv(frame, path: str | os.PathLike, float_format: str | None = None) -> None:
    """Write a pandas table as TSV atomically (no index)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format=float_format)


def write_json(path: str | os.PathLike, document) -> None:
    """Write ``document`` as indented JSON atomically; NaN/inf become null, numpy scalars plain numbers."""
    atomic_write_text(path, json.dumps(_finite(document), indent=2, default=_json_default, allow_nan=False) + "\n")


def _finite(value):
    """NaN/inf → None (JSON null) throughout a document."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _finite(value.item())
    return value


def _json_default(value):
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _finite(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
