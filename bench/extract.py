"""Benchmark of ResNet50-trunc patch feature extraction (``mmsurv.features``) on this machine.

On one generated 20x slide (``mmsurv.demo.slides``; 512 px patches on tissue at level 0, random-init
weights: no download) and the SAME patches for every setting, it measures

* (a) the model-only ceiling: forward passes on normalised tensors already in memory, and
* (b) end to end: ``extract_slide_features`` from the slide file to features on disk,

in patches/s, with each setting's peak RSS (main process; DataLoader workers separately) and the
load average around it. Every setting runs in a fresh subprocess, so peak RSS, thread pools and
compiled code do not leak between settings; ``torch.compile`` settings share one inductor cache
under the work folder (end-to-end compile runs therefore see a warm cache, like every slide but
the first of a workflow run).

    python bench/extract.py                          # 384 patches, every setting (~15 min on 2 cores)
    python bench/extract.py --patches 128 --only fp32_cl_b32 e2e_default
    python bench/extract.py --list

Other jobs on the machine distort the figures: the table prints the 1-minute load average seen
around each setting; rerun when ``uptime`` shows the machine quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PATCH = 512
SLIDE = dict(width=20000, height=16000, mpp=0.5, app_mag=20, seed=1, tissue_fraction=0.5)


@dataclass(frozen=True)
class Setting:
    """One benchmarked configuration; ``mode`` "model" = ceiling, "e2e" = slide to disk."""

    name: str
    mode: str
    batch_size: int = 32
    channels_last: bool = False
    precision: str = "fp32"
    compile: bool = False
    num_workers: int = 1
    resize: str = "worker"
    max_patches: int | None = None      # model mode: patches timed (slow settings get fewer)
    note: str = ""
    extra: dict = field(default_factory=dict)


SETTINGS = [
    Setting("fp32_b32", "model", note="baseline: NCHW fp32"),
    Setting("fp32_cl_b16", "model", 16, True),
    Setting("fp32_cl_b32", "model", 32, True),
    Setting("fp32_cl_b64", "model", 64, True),
    Setting("bf16_b32", "model", 32, False, "bf16", max_patches=32),
    Setting("bf16_cl_b32", "model", 32, True, "bf16", max_patches=32),
    Setting("compile_b32", "model", 32, False, compile=True, note="inductor, freezing"),
    Setting("compile_cl_b32", "model", 32, True, compile=True, note="inductor, freezing"),
    Setting("e2e_clam_like", "e2e", 32, False, num_workers=0, resize="device",
            note="NCHW, read+float resize in the main process (CLAM on CPU)"),
    Setting("e2e_default", "e2e", 32, True, compile=True, num_workers=1,
            note="the chosen defaults (warm inductor cache)"),
    Setting("e2e_cl_eager", "e2e", 32, True, num_workers=1, note="defaults without compile"),
    Setting("e2e_cl_w0", "e2e", 32, True, num_workers=0),
    Setting("e2e_cl_w2", "e2e", 32, True, num_workers=2),
    Setting("e2e_cl_resize_main", "e2e", 32, True, num_workers=1, resize="device",
            note="float resize in the main process"),
    Setting("e2e_cl_b16", "e2e", 16, True, num_workers=1),
    Setting("e2e_compile_cl_w2", "e2e", 32, True, compile=True, num_workers=2, note="warm inductor cache"),
]


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------

def prepare_inputs(work: Path, n_patches: int) -> tuple[Path, Path]:
    """The bench slide and a CLAM-style patch h5 with ``n_patches`` tissue patches (made once)."""
    import h5py

    from mmsurv.demo.slides import SlideSpec, SyntheticSlide, make_slide

    slide_path, patches = work / "bench_20x.svs", work / f"patches_{n_patches}.h5"
    spec = SlideSpec(**SLIDE)
    synthetic = SyntheticSlide(spec) if slide_path.exists() else make_slide(slide_path, spec)
    if not patches.exists():
        coords = tissue_grid(synthetic, n_patches)
        with h5py.File(patches, "w") as h5:
            dataset = h5.create_dataset("coords", data=coords)
            dataset.attrs.update({"patch_size": PATCH, "patch_level": 0, "downsample": [1.0, 1.0],
                                  "level_dim": [spec.width, spec.height], "name": "bench_20x",
                                  "mpp": spec.mpp, "magnification": 20, "patch_size_level0": PATCH})
    return slide_path, patches


def tissue_grid(synthetic, n_patches: int) -> np.ndarray:
    """Non-overlapping grid patches >50 % on tissue, evenly subsampled to ``n_patches``."""
    mask = synthetic.tissue_mask(16)
    width, height = synthetic.spec.width, synthetic.spec.height
    coords = [(x, y) for y in range(0, height - PATCH + 1, PATCH) for x in range(0, width - PATCH + 1, PATCH)
              if mask[y // 16:(y + PATCH) // 16, x // 16:(x + PATCH) // 16].mean() > 0.5]
    if len(coords) < n_patches:
        raise SystemExit(f"the bench slide has only {len(coords)} tissue patches (< {n_patches})")
    keep = np.linspace(0, len(coords) - 1, n_patches).round().astype(int)
    return np.asarray(coords, dtype=np.int64)[keep]


# ------------------------------------------------------------------------------------------------
# One setting (child process)
# ------------------------------------------------------------------------------------------------

def run_setting(setting: Setting, slide_path: Path, patches: Path, work: Path, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    cache = work / "inductor_cache"
    load_before = os.getloadavg()[0]
    if setting.mode == "model":
        result = model_ceiling(setting, slide_path, patches, cache)
    else:
        result = end_to_end(setting, slide_path, patches, work, cache)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {**result, "name": setting.name, "peak_rss_mb": round(own), "worker_peak_rss_mb": round(children),
            "load": round(max(load_before, os.getloadavg()[0]), 2), "threads": threads}


def model_ceiling(setting: Setting, slide_path: Path, patches: Path, cache: Path) -> dict:
    """Forward passes on tensors already in memory (read + resized + normalised beforehand)."""
    import torch

    from mmsurv.features.dataset import PatchBatchDataset, read_patch_coords
    from mmsurv.features.encoders import build_encoder
    from mmsurv.features.extract import Normaliser, batch_forward, prepare_model
    from mmsurv.features import ExtractSettings

    coords = read_patch_coords(patches, slide_name="bench")
    n = min(len(coords), setting.max_patches or len(coords), 128)
    module, _, info = build_encoder("resnet50_trunc", "none")
    dataset = PatchBatchDataset(slide_path, coords.coords[:n], level=0, size=PATCH, slide_name="bench",
                                resize_to=info.preprocessing.input_size)
    device = torch.device("cpu")
    normalise = Normaliser(info.preprocessing, device, resize=False, channels_last=setting.channels_last)
    batches = [normalise(dataset[list(range(i, min(i + setting.batch_size, n)))]["pixels"])
               for i in range(0, n, setting.batch_size)]
    model = prepare_model(module, device, channels_last=setting.channels_last, compile=setting.compile,
                          cache_dir=cache)
    settings = ExtractSettings(batch_size=setting.batch_size, precision=setting.precision,
                               channels_last=setting.channels_last, compile=setting.compile)
    forward = batch_forward(model, device, settings)
    t0 = time.perf_counter()
    forward(batches[0])                                   # warm-up (and compilation)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for batch in batches:
        forward(batch)
    seconds = time.perf_counter() - t0
    return {"patches": n, "seconds": round(seconds, 2), "patches_per_s": round(n / seconds, 2),
            "warmup_s": round(warmup_s, 1)}


def end_to_end(setting: Setting, slide_path: Path, patches: Path, work: Path, cache: Path) -> dict:
    """``extract_slide_features`` from the slide to h5 + pt + json on disk."""
    from mmsurv.features.extract import extract_slide_features

    t0 = time.perf_counter()
    metadata = extract_slide_features(
        slide_path, patches, work / "out" / setting.name, slide_name="bench", weights="none",
        batch_size=setting.batch_size, num_workers=setting.num_workers, device="cpu",
        precision=setting.precision, channels_last=setting.channels_last, compile=setting.compile,
        compile_cache_dir=cache, resize=setting.resize, force=True)
    total = time.perf_counter() - t0
    return {"patches": metadata["n_patches"], "seconds": metadata["seconds_extract"],
            "patches_per_s": metadata["patches_per_s"], "total_s": round(total, 1)}


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------

def run_in_subprocess(setting: Setting, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", setting.name, "--patches", str(args.patches),
               "--work-dir", str(args.work_dir), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"name": setting.name, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict], by_name: dict[str, Setting]) -> str:
    lines = ["| setting | mode | batch | channels_last | precision | compile | workers | resize | patches | "
             "patches/s | warm-up/compile s | peak RSS MB (workers) | load | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = by_name[r["name"]]
        if "error" in r:
            lines.append(f"| {s.name} | {s.mode} | | | | | | | | ERROR: {r['error']} | | | | |")
            continue
        workers = s.num_workers if s.mode == "e2e" else "-"
        resize = s.resize if s.mode == "e2e" else "-"
        lines.append(
            f"| {s.name} | {s.mode} | {s.batch_size} | {s.channels_last} | {s.precision} | {s.compile} | "
            f"{workers} | {resize} | {r['patches']} | {r['patches_per_s']:.2f} | {r.get('warmup_s', '')} | "
            f"{r['peak_rss_mb']} ({r['worker_peak_rss_mb']}) | {r['load']} | {s.note} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=384, help="patches of the end-to-end runs (default 384)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "mmsurv_bench_extract",
                        help="slide, patch file, outputs and inductor cache (default %(default)s)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--only", nargs="+", help="run only these settings")
    parser.add_argument("--list", action="store_true", help="list the settings and exit")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    by_name = {s.name: s for s in SETTINGS}
    if args.list:
        print("\n".join(f"{s.name}: {s.mode} {s.note}" for s in SETTINGS))
        return 0
    args.work_dir.mkdir(parents=True, exist_ok=True)
    slide_path, patches = prepare_inputs(args.work_dir, args.patches)
    if args.child:
        print(json.dumps(run_setting(by_name[args.child], slide_path, patches, args.work_dir, args.threads)))
        return 0
    import torch

    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} threads, {args.patches} patches of {PATCH} px, load {os.getloadavg()}", flush=True)
    results = []
    for setting in [by_name[n] for n in args.only] if args.only else SETTINGS:
        results.append(run_in_subprocess(setting, args))
        print(json.dumps(results[-1]), flush=True)
    print(table(results, by_name))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
