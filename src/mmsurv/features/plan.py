"""Planning one slide's feature extraction: what ``auto`` means on this machine, and checks first.

For :func:`mmsurv.features.extract.extract_slide_features` and the benchmark: the patch file is
checked against the slide before anything is read (:func:`check_patches_match_slide`), the
settings are validated, and device, precision, resize place, reader and encoder processes are
resolved into an :class:`ExtractionPlan` (every choice recorded in the outputs' metadata).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from mmsurv.features import COMPILE_MODES, PRECISIONS, READERS, RESIZE_PLACES, ExtractSettings
from mmsurv.features.dataset import (
    PatchCoords,
    PatchFileError,
    reading_order,
)
from mmsurv.features.regions import choose_reader
from mmsurv.naming import slide_stem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractionPlan:
    """The resolved settings of one slide's run (all recorded in the metadata)."""

    device: torch.device
    precision: str          # fp32, bf16, fp16 or tf32 (never "auto")
    resize: str             # "worker" (uint8) or "device" (float)
    reader: str             # "openslide" or "tiff"
    reader_reason: str
    encoder_processes: int  # 0: the main process encodes; N: N worker processes read and encode

    def parallelism(self, settings: ExtractSettings) -> str:
        if self.encoder_processes:
            return f"{self.encoder_processes} encoder processes (1 thread each)"
        return f"{torch.get_num_threads()} threads, {settings.num_workers} reader processes"


def plan_extraction(settings: ExtractSettings, slide_path: str | os.PathLike, patches: PatchCoords
                    ) -> ExtractionPlan:
    device = resolve_device(settings.device)
    order = reading_order(patches.coords)
    probe = tuple(int(v) for v in patches.coords[order[0]]) if len(order) else None
    reader, reason = choose_reader(settings.reader, slide_path, patches.patch_level, patches.patch_size, probe)
    return ExtractionPlan(device, resolve_precision(settings.precision, device),
                          resolve_resize(settings.resize, device), reader, reason,
                          resolve_encoder_processes(settings, device))


def resolve_encoder_processes(settings: ExtractSettings, device: torch.device) -> int:
    """None -> one per torch thread on CPU; CUDA always encodes in the main process (0).

    ``torch.compile`` (``compile_mode: jit``) code hangs in forked processes (seen here), so jit
    compilation encodes in the main process too; AOT packages and eager modules fork fine.
    """
    jit = settings.compile and settings.compile_mode == "jit"
    if jit and settings.encoder_processes:
        raise ValueError("compile_mode jit cannot run in encoder processes (torch.compile code hangs after fork): "
                         "use compile_mode aot or encoder_processes 0")
    if device.type == "cuda" or jit:
        return 0
    requested = settings.encoder_processes
    return max(1, torch.get_num_threads()) if requested is None else requested


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU; anything else as given (e.g. "cpu", "cuda:1")."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but CUDA is not available")
    return dev


def resolve_resize(resize: str, device: torch.device) -> str:
    if resize != "auto":
        return resize
    return "device" if device.type == "cuda" else "worker"


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> bf16 on a CPU with native bf16 instructions, else fp32 (see ``ExtractSettings``)."""
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 is supported on CUDA only (use bf16 or fp32 on CPU)")
        if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("bf16 requested on a CPU without native bf16 (capability %s): expect it to be SLOWER "
                        "than fp32", torch.backends.cpu.get_cpu_capability())
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below AVX512_CORE_BF16: no bf16 dot-product instructions
ISA_CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX) and oneDNN may use them; else
    oneDNN emulates bf16 (slow). ``ONEDNN_MAX_CPU_ISA`` capped below AVX512_CORE_BF16 (as when an
    AVX2-only machine is emulated on a newer one) counts as no bf16."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in ISA_CAPS_WITHOUT_BF16:
        return False
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def configure_backends(precision: str, device: torch.device) -> None:
    """fp32 means fp32 on CUDA too (no TF32 convs/matmuls); tf32 enables them; fixed shapes -> benchmark."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"


def check_patches_match_slide(patches: PatchCoords, slide_path: str | os.PathLike, *, slide_name: str,
                              patches_h5: str | os.PathLike) -> None:
    """Raise :class:`PatchFileError` naming both slides when the patch file was made for another slide.

    Checks the ``name`` attribute (compared as slide names, so ``X`` and ``X.svs`` agree), the
    level dimensions (``level0_dim``; ``level_dim`` at ``patch_level``, as CLAM writes it) and that
    every patch lies inside the slide's level 0. A file without name and dimensions is only
    bounds-checked, with a warning.
    """
    import openslide

    attrs = patches.attrs
    recorded = attrs.get("name")
    if recorded is not None and slide_stem(str(recorded)) != slide_stem(slide_name):
        raise PatchFileError(
            f"patch file {patches_h5} was made for slide {recorded!r}, not for slide {slide_name!r} ({slide_path}); "
            "give the patch file of this slide"
        )
    with openslide.OpenSlide(os.fspath(slide_path)) as handle:
        level0 = tuple(int(v) for v in handle.dimensions)
        levels = [tuple(int(v) for v in dims) for dims in handle.level_dimensions]
    expected = {"level0_dim": level0}
    if 0 <= patches.patch_level < len(levels):
        expected["level_dim"] = levels[patches.patch_level]
    for key, dims in expected.items():
        if key in attrs and tuple(int(v) for v in np.ravel(attrs[key])) != dims:
            name = f" (made for slide {recorded!r})" if recorded is not None else ""
            raise PatchFileError(
                f"patch file {patches_h5}{name} records {key} {tuple(int(v) for v in np.ravel(attrs[key]))}, "
                f"but slide {slide_name!r} ({slide_path}) is {dims} px: the patches belong to another slide"
            )
    if recorded is None and not (set(expected) & set(attrs)):
        log.warning("slide %s: patch file %s records neither the slide name nor its dimensions; only "
                    "checking that the patches lie inside the slide", slide_name, patches_h5)
    if len(patches.coords):
        far = patches.coords.max(axis=0)
        if (patches.coords.min() < 0) or far[0] >= level0[0] or far[1] >= level0[1]:
            raise PatchFileError(
                f"patch file {patches_h5}: patches reach level-0 (x={int(far[0])}, y={int(far[1])}) or negative "
                f"coordinates, outside slide {slide_name!r} ({slide_path}, {level0[0]}x{level0[1]} px): "
                "the patches belong to another slide"
            )


def check_settings(settings: ExtractSettings, slide_name: str) -> None:
    if settings.batch_size < 1:
        raise ValueError(f"slide {slide_name}: batch size must be >= 1, got {settings.batch_size}")
    if settings.num_workers < 0:
        raise ValueError(f"slide {slide_name}: workers must be >= 0, got {settings.num_workers}")
    if settings.encoder_processes is not None and settings.encoder_processes < 0:
        raise ValueError(f"slide {slide_name}: encoder processes must be >= 0, got {settings.encoder_processes}")
    choices = {"precision": PRECISIONS, "resize": RESIZE_PLACES, "compile_mode": COMPILE_MODES, "reader": READERS}
    for name, allowed in choices.items():
        if getattr(settings, name) not in allowed:
            raise ValueError(f"slide {slide_name}: {name} {getattr(settings, name)!r} not one of {allowed}")
