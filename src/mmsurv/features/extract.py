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

import logging
import os
import time
from pathlib import Path
from typing import Any

from mmsurv.features import DEFAULTS, ExtractSettings
from mmsurv.features.dataset import (
    read_patch_coords,
)
from mmsurv.features.encode import run_extraction, shared_encoder, shared_forward
from mmsurv.features.outputs import (
    FeaturePaths,
    build_metadata,
    numbers_key,
    remove_stale_temp_files,
    valid_existing_metadata,
    write_json,
    write_outputs,
)
from mmsurv.features.plan import check_patches_match_slide, check_settings, plan_extraction

log = logging.getLogger(__name__)


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
    check_settings(settings, slide_name)
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
                write_json(paths.json, existing)
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
                              settings=settings, input_size=built.info.preprocessing.resize_side,
                              interpolation=built.info.preprocessing.interpolation)
    extract_s = time.perf_counter() - t0
    metadata = build_metadata(slide_name, slide_path, patches_h5, patches, built, settings, plan,
                              compiled=forward.compiled, prepare_s=prepare_s, extract_s=extract_s,
                              total_s=time.perf_counter() - started)
    metadata["numbers"] = numbers
    write_outputs(paths, features, patches, metadata)
    log.info("slide %s: %d patches in %.1f s (%.1f patches/s) -> %s", slide_name, len(patches), extract_s,
             metadata["patches_per_s"], paths.h5)
    return {**metadata, "skipped": False}
