"""Running one slide's feature extraction: the encoder, its (compiled) forward and the patch loader.

For :func:`mmsurv.features.extract.extract_slide_features` and the benchmark. The encoder and its
forward are built once per process and shared by the slides of a batch job; compiling is decided
by :func:`compile_pays` (the job's patch count against the compile cost); the loader's workers
read, resize and (with encoder processes) encode contiguous stretches of the slide.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mmsurv.features import ExtractSettings
from mmsurv.features.dataset import (
    PatchBatchDataset,
    PatchCoords,
    PatchReadError,
    batches_in_order,
    reading_order,
    worker_init,
)
from mmsurv.features.encoders import Encoder, build_encoder
from mmsurv.features.inference import build_graph, compiled_graph, package_path
from mmsurv.features.plan import ExtractionPlan, configure_backends

log = logging.getLogger(__name__)


PROGRESS_EVERY_S = 15.0


def input_shape(built: Encoder, plan: ExtractionPlan, patches: PatchCoords, batch_size: int) -> tuple[int, ...]:
    """(B, 3, H, W) of the uint8 batches the model receives."""
    side = built.info.preprocessing.resize_side if plan.resize == "worker" else patches.patch_size
    return batch_size, 3, side, side


_ENCODERS: dict[tuple, Encoder] = {}


def shared_encoder(settings: ExtractSettings) -> Encoder:
    """The encoder of these settings, built once per process (a batch of slides reuses it)."""
    key = (settings.encoder, settings.weights, settings.seed)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoder(settings.encoder, settings.weights, seed=settings.seed)
    return _ENCODERS[key]


_FORWARDS: dict[tuple, BatchForward] = {}


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
    if not built.info.compiles:
        log.info("compile: skipped for %s, measured slower compiled than eager (bench/extract.py); encoding eagerly",
                 built.info.name)
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
                   input_size: int = 224, interpolation: str = "bilinear") -> np.ndarray:
    """Features (N, D) float32 in the patch file's order. ``input_size``: the side the workers resize
    to (the encoder's ``preprocessing.resize_side``), with ``interpolation``.

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
                   resize_to=input_size if plan.resize == "worker" else None, resize_mode=interpolation, **extra)
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
