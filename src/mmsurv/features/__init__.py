"""Patch feature extraction for the WSI branch: encoders (ResNet50-trunc, registry) and the per-slide run.

Who uses this: the Snakemake feature rule and ``mmsurv features extract`` (``extract_slide_features``),
model code that loads ``features/pt_files/{slide}.pt``, and anyone registering another encoder
(``register_encoder``). See ``mmsurv.features.extract`` for the measured speed settings.

Names are imported lazily, so ``mmsurv --help`` (which imports ``mmsurv.features.cli``) does not pay
for importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "tf32")
RESIZE_PLACES = ("auto", "worker", "device")
COMPILE_MODES = ("aot", "jit")
READERS = ("auto", "openslide", "tiff")


@dataclass(frozen=True)
class ExtractSettings:
    """Every knob of the extraction; the resolved values are recorded in the outputs."""

    encoder: str = "resnet50_trunc"
    weights: str = "imagenet"
    batch_size: int = 32           # CPU: 32 is within noise of the best of 16/32/64 (bench)
    num_workers: int = 1           # reader processes when the main process encodes (encoder_processes 0)
    device: str = "auto"           # "auto": cuda when available, else cpu
    # "auto": bf16 autocast on a CPU with native bf16 (AMX / AVX512-BF16: min cosine to fp32 0.99999,
    # tested), fp32 on other CPUs (bf16 is emulated there, ~8x slower) and on CUDA (not yet measured).
    precision: str = "auto"
    channels_last: bool = True     # ~1.4x on CPU (oneDNN NHWC), identical features (cos 1.0)
    compile: bool = True           # ~7x with bf16 on AMX (bench); eager fallback if compilation fails
    compile_mode: str = "aot"      # "aot": AOTInductor package built once, loaded per slide; "jit": torch.compile
    compile_cache_dir: str | None = None
    resize: str = "auto"           # "auto": uint8 in workers on CPU, float on the GPU with CUDA
    reader: str = "auto"           # "auto": JPEG tiles decoded directly when pixel-identical to OpenSlide
    seed: int = 0                  # random init for weights="none"
    # CPU: processes that each read AND encode with one thread (the main process only collects);
    # None = one per torch thread of the job (2 here: ~25 % faster end to end than one 2-thread
    # encoder with a reader process, whose thread team stalls whenever the reader takes a core);
    # 0 = encode in the main process with torch threads. Always 0 on CUDA.
    encoder_processes: int | None = None
    # Compile only when it pays: a job builds the AOT package (or runs torch.compile) only when it has
    # at least this many patches to encode; a package already built for these settings is always
    # loaded (~0.3 s). Measured (bench/extract.py, 256 patches; Xeon with AMX, bf16): the build takes
    # 18.5 s and saves 1/39 - 1/78 = 0.013 s per patch end to end, so it pays from ~1,400 patches; on an
    # AVX2-only EPYC (fp32) the build took ~70 s for 15.9 against ~6-8 patches/s eager, i.e. ~1,000+
    # patches. 2,000 is on the safe side of both: the demo's jobs (~160 patches each) run eagerly, a
    # real TCGA job (10 slides of thousands of patches) compiles. 0 = always compile.
    compile_min_patches: int = 2000


DEFAULTS = ExtractSettings()


_EXPORTS = {
    "PatchReadError": "mmsurv.features.dataset",
    "read_patch_coords": "mmsurv.features.dataset",
    "Encoder": "mmsurv.features.encoders",
    "EncoderInfo": "mmsurv.features.encoders",
    "Preprocessing": "mmsurv.features.encoders",
    "WeightsError": "mmsurv.features.encoders",
    "available_encoders": "mmsurv.features.encoders",
    "build_encoder": "mmsurv.features.encoders",
    "register_encoder": "mmsurv.features.encoders",
    "FeaturePaths": "mmsurv.features.outputs",
    "extract_slide_features": "mmsurv.features.extract",
}
__all__ = sorted([*_EXPORTS, "COMPILE_MODES", "DEFAULTS", "ExtractSettings", "PRECISIONS", "READERS",
                  "RESIZE_PLACES"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
