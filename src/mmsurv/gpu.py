"""GPU slots: give each ``gpu=1`` job of a workstation run its own device.

Snakemake's ``--resources gpu=4`` only *counts* jobs; it does not tell a job which GPU to use, so
four jobs would all start on device 0. A job wraps its GPU work in :func:`gpu_slot`, which takes
an exclusive lock file per device (``fcntl.flock``) and sets ``CUDA_VISIBLE_DEVICES`` to the device
it got. The kernel drops the lock when the process ends, also when it crashes or is killed, so a
failed job never keeps a GPU. Lock files live in a per-user folder of the machine, so two runs on
the same workstation share the devices correctly too.

On SLURM the allocation already sets ``CUDA_VISIBLE_DEVICES``; it is kept as it is. With no GPU
(none configured and none detected) the job runs on the CPU and nothing is locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

ENV_DEVICES = "MMSURV_GPUS"  # comma-separated device ids, overrides detection


def default_lock_dir() -> Path:
    """Per-user lock folder shared by every run on this machine."""
    return Path(tempfile.gettempdir()) / f"mmsurv-gpu-locks-{os.getuid()}"


def detect_devices() -> list[str]:
    """Device ids from ``$MMSURV_GPUS``, else the CUDA devices torch sees (none without torch/CUDA)."""
    configured = os.environ.get(ENV_DEVICES, "").strip()
    if configured:
        return [device.strip() for device in configured.split(",") if device.strip()]
    try:
        import torch
    except ImportError:
        return []
    return [str(index) for index in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _managed_by_slurm() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID")) and "CUDA_VISIBLE_DEVICES" in os.environ


def _try_lock(path: Path):
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def gpu_slot(
    devices: Sequence[str | int] | None = None,
    lock_dir: str | os.PathLike | None = None,
    poll_seconds: float = 1.0,
    timeout_seconds: float | None = None,
) -> Iterator[str | None]:
    """Hold one free device for the block and expose only it through ``CUDA_VISIBLE_DEVICES``.

    Yields the device id, or ``None`` when the job runs on the CPU (no devices) or on SLURM (the
    allocation's ``CUDA_VISIBLE_DEVICES`` is kept). Waits while every device is taken by other
    processes (possible when another run shares the machine), up to ``timeout_seconds``.
    """
    if _managed_by_slurm():
        log.info("GPU from the SLURM allocation: CUDA_VISIBLE_DEVICES=%s", os.environ["CUDA_VISIBLE_DEVICES"])
        yield None
        return
    devices = [str(device) for device in (detect_devices() if devices is None else devices)]
    if not devices:
        log.info("no GPU configured or detected: running on the CPU")
        yield None
        return
    folder = Path(lock_dir) if lock_dir else default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    device, handle = _acquire(devices, folder, poll_seconds, timeout_seconds)
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    log.info("GPU slot: device %s (CUDA_VISIBLE_DEVICES=%s)", device, device)
    try:
        yield device
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _acquire(devices: list[str], folder: Path, poll_seconds: float, timeout_seconds: float | None):
    start = time.monotonic()
    while True:
        for device in devices:
            handle = _try_lock(folder / f"gpu-{device}.lock")
            if handle is not None:
                return device, handle
        if timeout_seconds is not None and time.monotonic() - start > timeout_seconds:
            raise TimeoutError(f"no free GPU among {', '.join(devices)} after {timeout_seconds:.0f} s (locks in {folder})")
        time.sleep(poll_seconds)
