"""The encoder as one inference graph, and its ahead-of-time (AOTInductor) or just-in-time compilation.

Who uses this: ``mmsurv.features.extract`` (per-slide extraction) and ``bench/extract.py``.

``InferenceGraph`` wraps an encoder so that ONE module goes from the DataLoader's uint8 batch to
float32 features: optional float resize (the CUDA path), ImageNet normalisation, channels_last,
the encoder under autocast (bf16/fp16) and the cast back to float32. Compiling that whole module
lets inductor fuse the normalisation into the first convolution's input and pre-pack every
weight (``freezing``) for oneDNN.

``compiled_graph`` offers two compilers:

* ``"aot"`` (default): ``torch.export`` + AOTInductor, packaged once as
  ``<cache>/aoti/<key>.pt2`` and loaded by every later job in ~0.3 s. The key hashes everything
  the compiled code depends on (encoder, weights identity, precision, batch and input shape,
  memory format, device, CPU capability, torch version), so a package is never reused for other
  settings or weights. The cache lives OUTSIDE the run's results (default
  ``~/.cache/mmsurv/compiled``, or ``$MMSURV_CACHE_DIR``, or the ``compile_cache_dir`` setting), so
  it is built once per machine and settings and reused by every later run. A job that finds no
  package builds it under a file lock (~20–45 s on 2 cores, minutes on a busy machine); a job that
  finds another job building it does not wait: it extracts eagerly and says so in its log and
  metadata (``compile: none``). The package is written atomically. Measured on this CPU (``bench/extract.py``):
  the per-slide cost of ``"jit"`` is ~17 s even with a warm inductor cache (dynamo tracing and
  freezing run in every process), which is longer than extracting a typical slide.
* ``"jit"``: ``torch.compile`` (inductor, freezing) in the process, cache in ``TORCHINDUCTOR_CACHE_DIR``.

A compiler failure (no C++ compiler, an unsupported op...) is logged and the eager module is used;
the metadata then says ``compile: none``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mmsurv.features import COMPILE_MODES
from mmsurv.features.encoders import Encoder
from mmsurv.io import atomic_path, try_exclusive_lock

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PACKAGE_FORMAT = 2              # 2: frozen (compiled under no_grad)
DEFAULT_CACHE = Path(os.environ.get("MMSURV_CACHE_DIR")
                     or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmsurv" / "compiled")


class PackageBusy(RuntimeError):
    """Another process is building the compiled package this job needs."""


class InferenceGraph(nn.Module):
    """uint8 (B, 3, H, W) -> float32 (B, D): [float resize], normalise, encoder under autocast."""

    def __init__(self, encoder: Encoder, *, precision: str, device_type: str, channels_last: bool,
                 resize: bool):
        super().__init__()
        prep = encoder.info.preprocessing
        std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))     # (x/255 - mean)/std == x*scale - shift
        self.register_buffer("shift", mean / std)
        self.encoder = encoder.module
        self.size, self.interpolation, self.antialias = prep.input_size, prep.interpolation, prep.antialias
        self.resize_side = prep.resize_side
        self.resize = resize
        self.autocast_dtype = AUTOCAST_DTYPES.get(precision)
        self.device_type = device_type
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float()
        if self.resize and tuple(x.shape[-2:]) != (self.resize_side, self.resize_side):
            x = nn.functional.interpolate(x, size=(self.resize_side, self.resize_side), mode=self.interpolation,
                                          antialias=self.antialias, align_corners=False)
        if x.shape[-1] > self.size:  # the central input_size square (preprocessing.resize_size > input_size)
            top = (x.shape[-2] - self.size) // 2
            left = (x.shape[-1] - self.size) // 2
            x = x[..., top:top + self.size, left:left + self.size]
        x = torch.addcmul(-self.shift, x, self.scale).contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device_type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            features = self.encoder(x)
        return features.float()


def build_graph(encoder: Encoder, device: torch.device, *, precision: str, channels_last: bool,
                resize: bool) -> InferenceGraph:
    """The eager ``InferenceGraph`` on ``device`` in eval mode."""
    graph = InferenceGraph(encoder, precision=precision, device_type=device.type, channels_last=channels_last,
                           resize=resize)
    graph = graph.to(device).eval().requires_grad_(False)
    if channels_last:
        graph.encoder.to(memory_format=torch.channels_last)
    return graph


def compiled_graph(graph: InferenceGraph, example: torch.Tensor, *, mode: str, identity: dict,
                   cache_dir: str | os.PathLike | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(callable, what ran: "aot", "jit" or "none") for ``graph`` on inputs shaped like ``example``.

    ``identity`` names what the weights are (it goes into the package key).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r} is not one of {COMPILE_MODES}")
    cache = Path(cache_dir).resolve() if cache_dir is not None else DEFAULT_CACHE
    try:
        if mode == "aot":
            return aot_package(graph, example, identity, cache), "aot"
        return jit_compile(graph, example, cache), "jit"
    except PackageBusy as busy:
        log.info("%s; not waiting for it: this job runs the encoder eagerly", busy)
        return graph, "none"
    except Exception as error:  # noqa: BLE001 - inductor raises many kinds (compiler missing...)
        first_line = str(error).splitlines()[0] if str(error) else ""
        log.warning("%s compilation failed (%s: %s); continuing in eager mode", mode, type(error).__name__,
                    first_line)
        return graph, "none"


def package_key(graph: InferenceGraph, example: torch.Tensor, identity: dict) -> str:
    """Hash of everything an AOT package depends on."""
    record = {
        "format": PACKAGE_FORMAT, "identity": identity, "shape": list(example.shape), "dtype": str(example.dtype),
        "input_memory_format": "channels_last" if example.is_contiguous(memory_format=torch.channels_last)
        and example.ndim == 4 and not example.is_contiguous() else "contiguous",
        "memory_format": str(graph.memory_format), "autocast": str(graph.autocast_dtype), "resize": graph.resize,
        "device": str(example.device), "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def package_path(graph: InferenceGraph, example: torch.Tensor, identity: dict,
                 cache_dir: str | os.PathLike | None) -> Path:
    """Where the AOT package of ``graph`` on inputs like ``example`` is (or would be) kept."""
    cache = Path(cache_dir).resolve() if cache_dir is not None else DEFAULT_CACHE
    return cache / "aoti" / f"{package_key(graph, example, identity)}.pt2"


def aot_package(graph: InferenceGraph, example: torch.Tensor, identity: dict, cache: Path
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Load ``<cache>/aoti/<key>.pt2``, building it first (under a file lock) when it is missing;
    :class:`PackageBusy` when another process holds the lock (it is building the package)."""
    package = package_path(graph, example, identity, cache)
    package.parent.mkdir(parents=True, exist_ok=True)
    if package.exists():  # written atomically: a package that exists is complete
        try:
            return _load_package(package)
        except Exception as error:  # noqa: BLE001 - a damaged package is rebuilt below
            log.warning("compiled package %s unusable (%s): rebuilding", package, error)
    with try_exclusive_lock(package.with_suffix(".lock")) as mine:
        if not mine:
            raise PackageBusy(f"the compiled encoder {package.name} is being built by another job")
        if package.exists():
            try:
                return _load_package(package)
            except Exception as error:  # noqa: BLE001 - a damaged package is rebuilt
                log.warning("compiled package %s unusable (%s): rebuilding", package, error)
        _build_package(graph, example, package)
    return _load_package(package)


def _build_package(graph: InferenceGraph, example: torch.Tensor, package: Path) -> None:
    started = time.perf_counter()
    log.info("AOT-compiling the encoder for input %s (once per settings; cached in %s)", tuple(example.shape),
             package.parent)
    # Both under no_grad: inductor applies freezing (constant weights -> BN folded into the convs,
    # oneDNN weight pre-packing) only when grad mode is off at compile time. Measured here: 142 vs
    # 74 patches/s (bf16, 2 threads) with and without it.
    with torch.no_grad():
        exported = torch.export.export(graph, (example,))
        with atomic_path(package) as tmp, _inductor_cache(package.parent.parent):
            torch._inductor.aoti_compile_and_package(exported, package_path=os.fspath(tmp),
                                                     inductor_configs={"freezing": True})
    log.info("AOT package %s built in %.1f s", package.name, time.perf_counter() - started)


def _load_package(package: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    started = time.perf_counter()
    loaded = torch._inductor.aoti_load_package(os.fspath(package))
    log.info("loaded AOT package %s in %.2f s", package.name, time.perf_counter() - started)
    return loaded


def jit_compile(graph: InferenceGraph, example: torch.Tensor, cache: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` (inductor, freezing), run once on ``example`` so failures surface here."""
    import torch._inductor.config as inductor_config

    with _inductor_cache(cache):
        inductor_config.freezing = True   # inference: fold BN into conv, pre-pack weights for oneDNN
        compiled = torch.compile(graph, backend="inductor", dynamic=False)
        with torch.inference_mode():
            compiled(example)
    return compiled


@contextlib.contextmanager
def _inductor_cache(cache: Path):
    """Inductor's (and Triton's) caches under ``cache`` while compiling."""
    cache.mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(cache / "triton")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

