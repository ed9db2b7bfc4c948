"""Reproducibility: seeds, deterministic kernels and thread count.

``make_deterministic`` sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (needed by deterministic cuBLAS;
it must be in the environment before CUDA initialises, so call this early), turns on
``torch.use_deterministic_algorithms(True)`` and disables cuDNN autotuning. With batch size 1, a
fixed visiting order (seeded generators) and a fixed thread count, the same config gives the same
numbers on the same CPU build.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_deterministic(enabled: bool = True) -> None:
    """Deterministic algorithms on (or off) for torch, cuBLAS and cuDNN."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def set_deterministic_algorithms(enabled: bool) -> None:
    """``torch.use_deterministic_algorithms`` without its import of TorchInductor.

    The public function also switches Inductor's deterministic mode, for which it imports
    ``torch._inductor`` and ``torch._dynamo``: 2–6 s of every training job's start-up here
    (``bench/train.py`` part 0), for compiled kernels training never uses. When Inductor is not
    loaded, the same C++ switch is set directly; when it is, the public function runs.
    """
    if "torch._inductor.config" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(enabled, warn_only=False)
    else:
        torch._C._set_deterministic_algorithms(enabled, warn_only=False)


def default_threads(modality: str = "multimodal") -> int:
    """Intra-op threads when the config names none.

    Genomic-only models (``modality == "omic"``) get 1: their forward/backward on one patient is a
    few products of a 1×G vector with ≤ G×256 matrices, far below what pays for splitting work
    between threads, and with a second thread on a shared (loaded) machine every small op waits for
    it (an SNN epoch on BLCA: 11–22 s with 2 threads, < 1 s with 1). Models that read WSI bags
    (N×1024 per patient) get at most 2, the cores a job gets here.
    """
    return 1 if modality == "omic" else max(1, min(2, os.cpu_count() or 1))


def set_threads(num_threads: int | None) -> int:
    """Use ``num_threads`` intra-op threads (None: :func:`default_threads` of a bag-reading model)."""
    count = num_threads if num_threads else default_threads()
    torch.set_num_threads(count)
    return count


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextlib.contextmanager
def reproducible(deterministic: bool, num_threads: int | None) -> Iterator[int]:
    """Deterministic mode and thread count inside the block, the caller's settings restored after.

    Yields the thread count in use. Restoring matters when training runs inside a larger process
    (tests, notebooks) whose other code should not inherit deterministic mode.
    """
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark, torch.get_num_threads())
    try:
        if deterministic:
            make_deterministic(True)
        yield set_threads(num_threads)
    finally:
        set_deterministic_algorithms(previous[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[1], previous[2]
        torch.set_num_threads(previous[3])
