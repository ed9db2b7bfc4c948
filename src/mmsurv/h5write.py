"""HDF5 files written atomically, for the patch and feature outputs (h5py is imported only by the
stages that write HDF5, so the other rules' environments need not install it)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

from mmsurv.io import atomic_write_bytes


def atomic_write_h5(dest: str | os.PathLike, fill: Callable[[Any], None]) -> None:
    """Write an HDF5 file atomically: ``fill(h5)`` builds it in memory, its bytes are then written.

    HDF5 never writes to the disk itself: when it does and the disk is full, its file cannot be
    closed and the library is left in a state where later HDF5 calls of the process can crash.
    Here a full disk is a plain failed Python write (:class:`mmsurv.io.DiskFullError`)."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        fill(handle)
    atomic_write_bytes(dest, buffer.getbuffer())
