"""Per-slide patch feature extraction (ResNet50-trunc by default) and its outputs.

Who uses this: the Snakemake feature rule and ``mmsurv features extract`` call
``extract_slide_features``; MCAT-style training code reads its outputs.

For one slide, given the patching stage's ``patches/{slide}.h5`` (CLAM format), it writes under
``out_dir`` (the workflow's ``features`` folder), each file atomically (temp file + rename):

* ``h5_files/{slide}.h5``: ``features`` (N x D float32) and ``coords`` (N x 2 int64, the patch file's
  order and attributes), plus the run metadata as attributes (``metadata`` holds it all as JSON);
* ``pt_files/{slide}.pt``: the same N x D float32 tensor, for ``torch.load``;
* ``json/{slide}.json``: the metadata sidecar (encoder, weights, precision, channels_last, compile,
  batch size, workers, N, seconds, patches/s, torch version, device...).

Before anything is read, the patch file is checked against the slide (:func:`check_patches_match_slide`):
the slide name and the level dimensions CLAM records on ``coords`` (``name``, ``level_dim``, and
our ``level0_dim``) must be the slide's, and every patch must lie inside it; a patch file made for
another slide stops the run naming both, instead of encoding background into zero-variance features.

An existing output is reused when it is valid: both files readable, N consistent with the patch
file, equal coords, equal features in h5 and pt, and the same **numbers key** (:func:`numbers_key`,
recorded as ``numbers`` in the metadata): encoder and its code version, the weights' identity (a
checkpoint by its sha256, never its path; the seed of random weights), preprocessing (input size,
interpolation, antialiasing, normalisation mean/std), resolved precision, where the resize runs
(uint8 in workers or float on the device: different numerics), the patch size and level read, the
feature size. Any difference recomputes the slide and the log names it (``precision: made with
'bf16', now 'fp32'``); files of an older format are recomputed. Left out on purpose, because they
change the speed and the features only by float rounding: channels_last (fp32 ResNet50 trunk on
this CPU, NHWC against NCHW: max |difference| 5.7e-6 on features up to 31, i.e. ~2e-7 relative,
not bitwise equal), compilation and batch size (other kernels, same rounding scale), workers and
the reader (the tile reader is used only where it is pixel-identical to OpenSlide). Recomputing a
cohort for a 1e-7 change is not worth hours; reruns stay reproducible because the files are
reused as they are. Leftover temp files of a killed run are removed, never read.

Pipeline: coords are read once and visited in row order (y, x). On CPU (default), a DataLoader
forks one worker per thread of the job; each worker takes a contiguous stretch of the slide's
batches, reads them with its own slide handle (JPEG tiles decoded directly when that is
pixel-identical to OpenSlide, see ``mmsurv.features.regions``), resizes them as uint8 (antialiased
bilinear, vectorised kernel) and encodes them with ONE thread through the inference graph of
``mmsurv.features.inference`` (normalisation + encoder under autocast, AOT-compiled); the main
process only collects the features. With ``encoder_processes: 0`` (and always on CUDA) the workers
only read, and the main process encodes with torch threads (pinned memory, non-blocking copies,
float resize on the GPU). Features are written back in the original coords order.

Measured here (``python bench/extract.py --patches 512``; 2 vCPU Intel Xeon with AMX-BF16 and
AVX512, torch 2.14.1, random-init trunk, 512 patches of 512 px from a generated 20x slide with
256 px JPEG Q70 tiles; other options in the bench's docstring). Figures of one run; repeated runs
on this shared VM moved by up to +-20 %:

=====================================================  ==========  ==========  ===================
option                                                 ceiling     end to end  note
                                                       patches/s   patches/s
=====================================================  ==========  ==========  ===================
CLAM-like: fp32 NCHW eager, OpenSlide, read and float  11.1        10.3        the baseline
resize in the main process
fp32 channels_last eager, 2 encoder processes          17.8        16.9
bf16 autocast channels_last eager, 2 processes         40.4        40.1        cosine to fp32
                                                                               >= 0.99999
fp32 channels_last AOT package, 2 processes            24.5        34.1        package 18 s, once
default: bf16 + channels_last + AOT, tile reader,      88.3        78.7        89 % of its ceiling;
2 encoder processes (1 thread each)                                            7.7x CLAM-like
default with the OpenSlide reader                      79.8        45.5        read_region ~13 ms
default, one 2-thread encoder + 1 reader process       77.7        58.9        team stalls
=====================================================  ==========  ==========  ===================

Reading a 512 px patch costs ~3.5 ms with the tile reader (2.4 ms on the real Aperio
CMU-1-Small-Region.svs) against ~13 ms through ``read_region`` and its ARGB conversion; the
resize to 224 px costs ~0.45 ms in uint8 (7-9 ms in float32). JPEG decoding is the floor of the
end-to-end figure: at ~7 ms of CPU per patch for the encoder, a pixel-exact decode is ~1/5 of the
work. torch.compile (``compile_mode: jit``) gives the same kernels (~140 patches/s model-only with
2 threads) but re-traces in every job (~10 s warm); it runs in the main process only (its code
hangs in forked workers). Without native bf16 (AVX2-only CPUs) ``precision: auto`` is fp32,
because oneDNN emulates bf16 there ~8x slower.

Defaults chosen from those measurements: see ``DEFAULTS`` (``mmsurv.features``) and its comments.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mmsurv.features import COMPILE_MODES, DEFAULTS, PRECISIONS, READERS, RESIZE_PLACES, ExtractSettings
from mmsurv.features.dataset import (
    PatchBatchDataset,
    PatchCoords,
    PatchFileError,
    PatchReadError,
    batches_in_order,
    read_patch_coords,
    reading_order,
    worker_init,
)
from mmsurv.features.encoders import Encoder, build_encoder
from mmsurv.features.inference import build_graph, compiled_graph, package_path
from mmsurv.features.regions import choose_reader
from mmsurv.h5write import atomic_write_h5
from mmsurv.io import atomic_path
from mmsurv.naming import slide_stem

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 15.0
OUTPUT_FORMAT_VERSION = 2  # 2: the numbers key (reuse check)


@dataclass(frozen=True)
class FeaturePaths:
    """The three outputs of one slide."""

    h5: Path
    pt: Path
    json: Path

    @classmethod
    def of(cls, out_dir: str | os.PathLike, slide_name: str) -> FeaturePaths:
        out = Path(out_dir)
        return cls(out / "h5_files" / f"{slide_name}.h5", out / "pt_files" / f"{slide_name}.pt",
                   out / "json" / f"{slide_name}.json")


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------

def extract_slide_features(
    slide_path: str | os.PathLike,
    patches_h5: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    slide_name: str,
    encoder: str = DEFAULTS.encoder,
    weights: str | os.PathLike = DEFAULTS.weights,
    batch_size: int = DEFAULTS.batch_size,
    num_workers: int = DEFAULTS.num_workers,
    device: str = DEFAULTS.device,
    precision: str = DEFAULTS.precision,
    channels_last: bool = DEFAULTS.channels_last,
    compile: bool = DEFAULTS.compile,  # noqa: A002 - the option's name
    compile_mode: str = DEFAULTS.compile_mode,
    compile_cache_dir: str | os.PathLike | None = None,
    resize: str = DEFAULTS.resize,
    reader: str = DEFAULTS.reader,
    seed: int = DEFAULTS.seed,
    encoder_processes: int | None = DEFAULTS.encoder_processes,
    compile_min_patches: int = DEFAULTS.compile_min_patches,
    force: bool = False,
    job_patches: int | None = None,
) -> dict[str, Any]:
    """Extract one slide's patch features into ``out_dir`` (h5 + pt + json); return the metadata.

    A valid existing output is kept (``force=False``) and its metadata returned with ``skipped``.
    Raises ``PatchReadError`` (naming the slide and coordinates) when a patch cannot be read.
    ``job_patches``: the patches the whole job encodes (a batch of slides), which decides whether
    compiling pays (``compile_min_patches``); default: this slide's.
    """
    settings = ExtractSettings(encoder, os.fspath(weights), int(batch_size), int(num_workers), device,
                               precision, bool(channels_last), bool(compile), compile_mode,
                               None if compile_cache_dir is None else os.fspath(compile_cache_dir), resize,
                               reader, seed, None if encoder_processes is None else int(encoder_processes),
                               int(compile_min_patches))
    _check_settings(settings, slide_name)
    started = time.perf_counter()
    paths = FeaturePaths.of(out_dir, slide_name)
    remove_stale_temp_files(paths)
    patches = read_patch_coords(patches_h5, slide_name=slide_name)
    if not Path(slide_path).is_file():
        raise FileNotFoundError(f"slide {slide_name}: slide file {slide_path} does not exist")
    check_patches_match_slide(patches, slide_path, slide_name=slide_name, patches_h5=patches_h5)
    plan = plan_extraction(settings, slide_path, patches)
    built = shared_encoder(settings)
    numbers = numbers_key(built, plan, patches)
    if not force:
        existing = valid_existing_metadata(paths, patches, numbers)
        if existing is not None:
            log.info("slide %s: valid features exist in %s, skipping", slide_name, paths.h5.parent.parent)
            if not paths.json.exists():
                _write_json(paths.json, existing)
            return {**existing, "skipped": True}

    t0 = time.perf_counter()
    forward = shared_forward(built, plan, settings, patches, len(patches) if job_patches is None else job_patches)
    prepare_s = time.perf_counter() - t0
    log.info("slide %s: %d patches (%d px at level %d) -> %s, device %s, %s, batch %d, %s, "
             "channels_last=%s, compile=%s (%.1f s), resize in %s, reader %s", slide_name, len(patches),
             patches.patch_size, patches.patch_level, settings.encoder, plan.device, plan.precision,
             settings.batch_size, plan.parallelism(settings), settings.channels_last, forward.compiled,
             prepare_s, plan.resize, plan.reader)
    t0 = time.perf_counter()
    features = run_extraction(forward, built.out_dim, slide_path, patches, slide_name=slide_name, plan=plan,
                              settings=settings, input_size=built.info.preprocessing.input_size)
    extract_s = time.perf_counter() - t0
    metadata = build_metadata(slide_name, slide_path, patches_h5, patches, built, settings, plan,
                              compiled=forward.compiled, prepare_s=prepare_s, extract_s=extract_s,
                              total_s=time.perf_counter() - started)
    metadata["numbers"] = numbers
    write_outputs(paths, features, patches, metadata)
    log.info("slide %s: %d patches in %.1f s (%.1f patches/s) -> %s", slide_name, len(patches), extract_s,
             metadata["patches_per_s"], paths.h5)
    return {**metadata, "skipped": False}


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


def _check_settings(settings: ExtractSettings, slide_name: str) -> None:
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


# ------------------------------------------------------------------------------------------------
# Device, precision, reader: what "auto" means on this machine
# ------------------------------------------------------------------------------------------------

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


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX); else oneDNN emulates bf16 (slow)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def configure_backends(precision: str, device: torch.device) -> None:
    """fp32 means fp32 on CUDA too (no TF32 convs/matmuls); tf32 enables them; fixed shapes -> benchmark."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"


# ------------------------------------------------------------------------------------------------
# The model and the extraction loop
# ------------------------------------------------------------------------------------------------

def input_shape(built: Encoder, plan: ExtractionPlan, patches: PatchCoords, batch_size: int) -> tuple[int, ...]:
    """(B, 3, H, W) of the uint8 batches the model receives."""
    side = built.info.preprocessing.input_size if plan.resize == "worker" else patches.patch_size
    return batch_size, 3, side, side


_ENCODERS: dict[tuple, Encoder] = {}
_FORWARDS: dict[tuple, BatchForward] = {}


def shared_encoder(settings: ExtractSettings) -> Encoder:
    """The encoder of these settings, built once per process (a batch of slides reuses it)."""
    key = (settings.encoder, settings.weights, settings.seed)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoder(settings.encoder, settings.weights, seed=settings.seed)
    return _ENCODERS[key]


def shared_forward(built: Encoder, plan: ExtractionPlan, settings: ExtractSettings, patches: PatchCoords,
                   job_patches: int | None = None) -> BatchForward:
    """:func:`make_forward`, once per process and settings: the next slide of a batch reuses the
    compiled graph. An eager stand-in for a compilation that did not happen (another job was
    building the package) is not kept, so a later slide of the batch loads the package."""
    key = (id(built), plan.device, plan.precision, plan.resize, settings.channels_last, settings.compile,
           settings.compile_mode, settings.compile_cache_dir, input_shape(built, plan, patches, settings.batch_size))
    if key in _FORWARDS:
        return _FORWARDS[key]
    forward = make_forward(built, plan, settings, patches, job_patches)
    if len(patches) and (forward.compiled != "none" or not settings.compile or forward.compile_skipped):
        _FORWARDS[key] = forward
    return forward


def make_forward(built: Encoder, plan: ExtractionPlan, settings: ExtractSettings, patches: PatchCoords,
                 job_patches: int | None = None) -> BatchForward:
    """The eager graph, compiled when asked, when there is anything to encode and when it pays
    (:func:`compile_pays`; ``job_patches``: the patches of the whole job, default this slide's)."""
    configure_backends(plan.precision, plan.device)
    graph = build_graph(built, plan.device, precision=plan.precision, channels_last=settings.channels_last,
                        resize=plan.resize == "device")
    if not settings.compile or len(patches) == 0:
        return BatchForward(graph, plan.device, settings.batch_size, compiled="none")
    example = torch.zeros(input_shape(built, plan, patches, settings.batch_size), dtype=torch.uint8,
                          device=plan.device).contiguous(memory_format=torch.channels_last)
    identity = {"encoder": built.info.name, "weights": built.info.weights_detail}
    if not compile_pays(settings, graph, example, identity, len(patches) if job_patches is None else job_patches):
        forward = BatchForward(graph, plan.device, settings.batch_size, compiled="none")
        forward.compile_skipped = True
        return forward
    run, compiled = compiled_graph(graph, example, mode=settings.compile_mode, identity=identity,
                                   cache_dir=settings.compile_cache_dir)
    return BatchForward(run, plan.device, settings.batch_size, compiled=compiled, fallback=graph)


def compile_pays(settings: ExtractSettings, graph, example: torch.Tensor, identity: dict, job_patches: int) -> bool:
    """Whether this job compiles: always when an AOT package of these settings is already built
    (loading it costs ~0.3 s), else only from ``compile_min_patches`` patches in the job (a build
    costs 20-70 s, see :class:`~mmsurv.features.ExtractSettings`). The decision and its numbers are logged."""
    if settings.compile_mode == "aot" and package_path(graph, example, identity, settings.compile_cache_dir).exists():
        log.info("compile: the %s package for these settings is built; loading it", settings.compile_mode)
        return True
    if job_patches >= settings.compile_min_patches:
        log.info("compile: %d patches in this job >= compile_min_patches %d: compiling (%s) pays",
                 job_patches, settings.compile_min_patches, settings.compile_mode)
        return True
    log.info("compile: %d patches in this job < compile_min_patches %d: a %s build (~20-70 s) would cost more "
             "than it saves (~0.01 s per patch); encoding eagerly", job_patches, settings.compile_min_patches,
             settings.compile_mode)
    return False


class BatchForward:
    """uint8 batch -> float32 numpy features, through the eager or compiled graph.

    Compiled code has a fixed batch size: short batches are padded (no recompilation for the last
    batch). If the compiled code fails when it runs, it warns once and continues with the eager
    graph; ``compiled`` then says "none" and the metadata records it.
    """

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], device: torch.device, batch_size: int, *,
                 compiled: str, fallback: nn.Module | None = None):
        self.run, self.device, self.batch_size = run, device, batch_size
        self.compiled, self.fallback = compiled, fallback
        self.compile_skipped = False  # compiling was asked for but did not pay (compile_pays)

    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        x = pixels.to(self.device, non_blocking=self.device.type == "cuda")
        n = x.shape[0]
        if self.compiled != "none" and n < self.batch_size:
            x = torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self._run(x)
        return y[:n].float().cpu().numpy()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled == "none":
            return self.run(x)
        try:
            return self.run(x)
        except Exception as error:  # noqa: BLE001 - compiled code raises many kinds
            if self.fallback is None:
                raise
            log.warning("compiled encoder failed (%s: %s); continuing in eager mode", type(error).__name__,
                        str(error).splitlines()[0] if str(error) else "")
            self.compiled, self.run = "none", self.fallback
            return self.run(x)


def make_loader(dataset: PatchBatchDataset, order: np.ndarray, batch_size: int, num_workers: int,
                device: torch.device) -> DataLoader:
    """Batches in row order; workers get their own slide handle; pinned memory on CUDA only.

    Workers are forked (not spawned): an encoding dataset hands them its loaded model that way.
    """
    return DataLoader(
        dataset, batch_size=None, sampler=batches_in_order(order, batch_size, num_workers), num_workers=num_workers,
        worker_init_fn=worker_init, pin_memory=device.type == "cuda",
        prefetch_factor=(2 if isinstance(dataset, EncodingDataset) else 4) if num_workers > 0 else None,
        multiprocessing_context="fork" if num_workers > 0 else None, persistent_workers=False)


class EncodingDataset(PatchBatchDataset):
    """A batch's features instead of its pixels: each worker process reads AND encodes (one thread)."""

    def __init__(self, *args, forward: BatchForward, **kwargs):
        super().__init__(*args, **kwargs)
        self.forward = forward

    def __getitem__(self, positions):
        batch = super().__getitem__(positions)
        if batch["error"]:
            return {**batch, "pixels": None, "features": None, "compiled": self.forward.compiled}
        features = torch.from_numpy(self.forward(batch.pop("pixels")))
        return {**batch, "features": features, "compiled": self.forward.compiled}


def run_extraction(forward: BatchForward, out_dim: int, slide_path: str | os.PathLike, patches: PatchCoords, *,
                   slide_name: str, plan: ExtractionPlan, settings: ExtractSettings,
                   input_size: int = 224) -> np.ndarray:
    """Features (N, D) float32 in the patch file's order.

    With ``plan.encoder_processes`` the workers encode and the main process only collects; a
    worker whose compiled code failed reports it, and ``forward.compiled`` becomes "none".
    """
    n = len(patches)
    features = np.zeros((n, out_dim), dtype=np.float32)
    if n == 0:
        return features
    encode_in_workers = plan.encoder_processes > 0
    kind = EncodingDataset if encode_in_workers else PatchBatchDataset
    extra = {"forward": forward} if encode_in_workers else {}
    dataset = kind(slide_path, patches.coords, level=patches.patch_level, size=patches.patch_size,
                   slide_name=slide_name, reader=plan.reader,
                   resize_to=input_size if plan.resize == "worker" else None, **extra)
    workers = plan.encoder_processes if encode_in_workers else settings.num_workers
    loader = make_loader(dataset, reading_order(patches.coords), settings.batch_size, workers, plan.device)
    progress = _Progress(slide_name, n)
    try:
        for batch in loader:
            if batch["error"]:
                raise PatchReadError(batch["error"])
            index = batch["index"].numpy()
            if encode_in_workers:
                features[index] = batch["features"].numpy()
                if batch["compiled"] == "none":
                    forward.compiled = "none"
            else:
                features[index] = forward(batch["pixels"])
            progress.update(len(index))
    finally:
        dataset.close()
        del loader
    if not np.isfinite(features).all():
        raise RuntimeError(f"slide {slide_name}: the encoder produced non-finite features")
    return features


class _Progress:
    """Progress in the log: a DEBUG line per batch, an INFO line every ``PROGRESS_EVERY_S`` seconds."""

    def __init__(self, slide_name: str, total: int):
        self.slide_name, self.total, self.done = slide_name, total, 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        rate = self.done / max(now - self.start, 1e-9)
        log.debug("slide %s: %d/%d patches (%.1f patches/s)", self.slide_name, self.done, self.total, rate)
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            log.info("slide %s: %d/%d patches (%.1f patches/s)", self.slide_name, self.done, self.total, rate)


# ------------------------------------------------------------------------------------------------
# Metadata and outputs
# ------------------------------------------------------------------------------------------------

def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"


def build_metadata(slide_name: str, slide_path: str | os.PathLike, patches_h5: str | os.PathLike,
                   patches: PatchCoords, built: Encoder, settings: ExtractSettings, plan: ExtractionPlan, *,
                   compiled: str, prepare_s: float, extract_s: float, total_s: float) -> dict[str, Any]:
    import torchvision

    n = len(patches)
    info = built.info
    return {
        "format_version": OUTPUT_FORMAT_VERSION,
        "slide": slide_name,
        "slide_path": os.fspath(slide_path),
        "patches_h5": os.fspath(patches_h5),
        "n_patches": n,
        "feature_dim": built.out_dim,
        "patch_size": patches.patch_size,
        "patch_level": patches.patch_level,
        "patch_attrs": patches.attrs,
        "encoder": info.name,
        "weights": info.weights,
        "weights_requested": settings.weights,
        "weights_detail": info.weights_detail,
        "pretrained": info.pretrained,
        "preprocessing": asdict(info.preprocessing),
        "resize": f"{info.preprocessing.input_size}px bilinear antialias, "
                  + ("uint8 in DataLoader workers" if plan.resize == "worker" else "float32 on the device"),
        "reader": plan.reader,
        "reader_reason": plan.reader_reason,
        "precision": plan.precision,
        "precision_requested": settings.precision,
        "channels_last": settings.channels_last,
        "compile": compiled,               # "aot", "jit" or "none" (also when compilation failed)
        "batch_size": settings.batch_size,
        "num_workers": settings.num_workers,
        "encoder_processes": plan.encoder_processes,
        "parallelism": plan.parallelism(settings),
        "device": device_description(plan.device),
        "seconds": round(total_s, 3),
        "seconds_prepare": round(prepare_s, 3),
        "seconds_extract": round(extract_s, 3),
        "patches_per_s": round(n / extract_s, 2) if extract_s > 0 and n else 0.0,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_outputs(paths: FeaturePaths, features: np.ndarray, patches: PatchCoords, metadata: dict) -> None:
    """h5, then pt, then json; each atomically."""
    atomic_write_h5(paths.h5, lambda h5: _fill_h5(h5, features, patches, metadata))
    with atomic_path(paths.pt) as tmp:
        torch.save(torch.from_numpy(features), tmp)
    _write_json(paths.json, metadata)


def _fill_h5(h5: h5py.File, features: np.ndarray, patches: PatchCoords, metadata: dict) -> None:
    h5.create_dataset("features", data=features.astype(np.float32, copy=False))
    coords = h5.create_dataset("coords", data=patches.coords.astype(np.int64, copy=False))
    for key, value in patches.attrs.items():
        with contextlib.suppress(TypeError, ValueError):
            coords.attrs[key] = value
    for key, value in metadata.items():
        if isinstance(value, str):
            h5.attrs[key] = str(value)      # np.str_ has no HDF5 conversion
        elif isinstance(value, (bool, int, float)):
            h5.attrs[key] = value
    h5.attrs["metadata"] = json.dumps(metadata, sort_keys=True)


def _write_json(path: Path, metadata: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")


def remove_stale_temp_files(paths: FeaturePaths) -> None:
    """Delete temp files a killed run left beside this slide's outputs (they are never trusted)."""
    for final in (paths.h5, paths.pt, paths.json):
        if final.parent.is_dir():
            for stale in final.parent.glob(f".{final.name}.*.tmp{final.suffix}"):
                log.info("removing leftover temp file %s", stale)
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


def numbers_key(built: Encoder, plan: ExtractionPlan, patches: PatchCoords) -> dict[str, Any]:
    """Every setting that changes the features' numbers (see the module docstring), as JSON values."""
    info = built.info
    return json.loads(json.dumps({
        "encoder": info.name,
        "encoder_version": info.version,
        "weights": info.weights_id or info.weights_detail,
        "preprocessing": asdict(info.preprocessing),
        "precision": plan.precision,
        "resize": plan.resize,
        "patch_size": patches.patch_size,
        "patch_level": patches.patch_level,
        "feature_dim": built.out_dim,
    }))


def numbers_difference(recorded: Any, expected: dict[str, Any]) -> str:
    """Which settings of the numbers key differ (empty when none), for the log."""
    if not isinstance(recorded, dict):
        return "made by an older version that did not record its settings"
    keys = sorted(set(recorded) | set(expected))
    return "; ".join(f"{key}: made with {recorded.get(key)!r}, now {expected.get(key)!r}"
                     for key in keys if recorded.get(key) != expected.get(key))


def valid_existing_metadata(paths: FeaturePaths, patches: PatchCoords, numbers: dict[str, Any]
                            ) -> dict[str, Any] | None:
    """The stored metadata when the outputs exist, are readable and consistent; else None."""
    if not (paths.h5.is_file() and paths.pt.is_file()):
        return None
    try:
        with h5py.File(paths.h5, "r") as h5:
            features = np.asarray(h5["features"][()])
            coords = np.asarray(h5["coords"][()])
            metadata = json.loads(h5.attrs["metadata"])
        tensor = torch.load(paths.pt, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file means "recompute"
        log.warning("existing features %s unreadable (%s): recomputing", paths.h5, error)
        return None
    problem = _output_problem(features, coords, tensor, metadata, patches, numbers)
    if problem:
        log.warning("existing features %s not reusable (%s): recomputing", paths.h5, problem)
        return None
    return metadata


def _output_problem(features: np.ndarray, coords: np.ndarray, tensor: Any, metadata: dict,
                    patches: PatchCoords, numbers: dict[str, Any]) -> str:
    n = len(patches)
    if features.dtype != np.float32 or features.ndim != 2 or features.shape[0] != n:
        return f"features {features.dtype} {features.shape}, expected ({n}, D) float32"
    if coords.shape != patches.coords.shape or not np.array_equal(coords, patches.coords):
        return "coords differ from the patch file"
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32 or tuple(tensor.shape) != features.shape:
        return "pt tensor does not match the h5 features"
    if not np.array_equal(tensor.numpy(), features):
        return "pt and h5 features differ"
    return numbers_difference(metadata.get("numbers"), numbers)


def iter_feature_files(out_dir: str | os.PathLike) -> Iterator[Path]:
    """The h5 feature files under a ``features`` folder (for downstream stages and reports)."""
    yield from sorted((Path(out_dir) / "h5_files").glob("*.h5"))
