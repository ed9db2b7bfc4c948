"""What machine this is: the CPU model and the instruction-set flags that decide which kernels torch
runs (AVX2 only, AVX512, AVX512-BF16, AMX). Printed by every bench beside its figures, so that a
figure is never read without the machine it came from."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model_and_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """(model name, the flags of :data:`FLAGS_OF_INTEREST` this CPU has), from ``/proc/cpuinfo``."""
    model, flags = "unknown CPU", set()
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
    return model, [flag for flag in FLAGS_OF_INTEREST if flag in flags]


def cpu_description() -> str:
    """One line: ``CPU: <model>, <n> logical CPUs (<m> usable), flags: avx2 avx512f ...``."""
    model, flags = cpu_model_and_flags()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"CPU: {model}, {os.cpu_count()} logical CPUs ({usable} usable), "
            f"flags: {' '.join(flags) or 'none of ' + '/'.join(FLAGS_OF_INTEREST)}")
