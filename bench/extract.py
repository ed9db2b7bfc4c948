"""Benchmark of patch feature extraction (``mmsurv.features``; ResNet50-trunc, or ``--encoder``) on this machine.

On one generated 20x slide (``mmsurv.demo.slides``, 256 px JPEG tiles; random-init weights: no
download) and the SAME patches for every option (a contiguous block of 512 px tissue patches on a
grid that is not aligned with the tiles, as CLAM's grids are not), it measures for each speed
option, in one run:

* (a) the model-only ceiling: the option's inference graph on uint8 batches already read and
  resized in memory (normalisation, autocast and the encoder: what the extraction loop calls), and
* (b) end to end: ``extract_slide_features`` from the slide file to h5 + pt + json on disk,

in patches/s (``e2e`` excludes the one-off model preparation, which is printed separately:
compile or package load; ``e2e wall`` includes it and the encoder build), with peak RSS (main
process; DataLoader workers in brackets) and the load average. Every measurement runs in a fresh
subprocess; AOT packages are built by the option's model-only run and loaded by its end-to-end run.

The summary compares, in the same run: the default's end to end with its own ceiling (target
>= 85 %) and with the CLAM-like option (fp32, NCHW, eager, OpenSlide read and float resize in the
main process, as CLAM's extractor on a CPU; target >= 5x, and >= 30 patches/s = 5x the ~6
patches/s measured for CLAM itself).

    python bench/extract.py --patches 512         # every option (~15 min on 2 cores)
    python bench/extract.py --only default clam_like --patches 128
    python bench/extract.py --list
    python bench/extract.py --encoder all --only fp32_cl default --patches 64   # every registered encoder
    python bench/extract.py --smoke               # seconds: does the bench still run? (the tests run it)

In the encoder-processes mode (the CPU default) the ceiling runs the same forked one-thread
DataLoader workers on batches already in memory. Measured here (2 vCPU Intel Xeon with AMX-BF16,
torch 2.14.1, ``--patches 512``; one run, repeated runs moved by up to +-20 % on this shared VM):
default ceiling 88.3 patches/s, end to end 78.7 (89 %; wall 53.8 with the encoder build, reader
check and package load), CLAM-like end to end 10.3 in the same run (7.7x; 13x the ~6 patches/s
of CLAM itself); the AOT package builds in 17-23 s once. Earlier runs of the default: 78.0 / 82.7
(94 %), 100.3 end to end. The per-option table is in ``mmsurv.features.extract``.

Every encoder (``--encoder all --only fp32_cl bf16_cl --patches 16``, same machine, random weights,
eager; patches/s end to end fp32 → bf16 autocast, and peak RSS of the main process): resnet50_trunc
16.2 → 31.9 (0.8 GB); ctranspath 8.3 → 18.5 (0.9 GB); uni 1.40 → 4.77 (1.9 GB); phikon_v2 1.46 →
5.58 (1.9 GB); conch_v1 (448 px) 0.91 → 2.25 (1.1 GB); uni2_h 0.47 → 1.52 (3.4 GB); virchow2 0.49 →
1.54 (3.2 GB); h_optimus_0 0.30 → 1.01 (5.1 GB); gigapath 0.39 → 1.39 (5.1 GB). bf16 autocast (the
``auto`` precision on a CPU with native bf16) gives 2.1-3.6x for every encoder, most for the ViTs;
channels_last only concerns the convolutions (the ViTs' patch embedding). Compiling (``--encoder
ctranspath uni --only default_aot bf16_cl --patches 64``: the AOT package built and used whatever the
patch count): CTransPath 32.7 → 42.3 patches/s (build 43 s, so it pays from ~6,000 patches, which
``compile_min_patches`` leaves to large jobs); UNI 9.1 → 6.8, slower (build 34 s): the ViT encoders
are never compiled (``EncoderInfo.compiles``, logged). On an AVX2-only CPU ``auto`` is fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from mmsurv.machine import cpu_description

PATCH = 512
GRID_OFFSET = (37, 61)          # the patch grid does not start on a tile boundary (as CLAM's)
SLIDE = dict(width=20000, height=16000, mpp=0.5, app_mag=20, seed=1, tissue_fraction=0.5)
SMOKE_SLIDE = dict(SLIDE, width=4000, height=3000)  # --smoke: a small slide, seconds to write
SLIDE_NAME = "bench_20x"        # the slide name recorded in the patch file and checked against it
JPEG_QUALITY = 70               # TCGA's Aperio slides say "JPEG/RGB Q=70" (the demo's default is 85)
CLAM_PATCHES_PER_S = 6.0        # CLAM's extractor on this CPU (issue 5)


@dataclass(frozen=True)
class Option:
    """One speed option: extraction settings (``extract_slide_features`` keywords) and a note."""

    name: str
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = True
    compile_mode: str = "aot"
    batch_size: int = 32
    num_workers: int = 1
    reader: str = "auto"
    resize: str = "worker"
    encoder_processes: int | None = None
    note: str = ""
    encoder: str = "resnet50_trunc"
    compile_min_patches: int = 2000  # the package default: a bench slide's few hundred patches run eagerly

    @property
    def label(self) -> str:
        return self.name if self.encoder == "resnet50_trunc" else f"{self.name} [{self.encoder}]"

    def extract_kwargs(self) -> dict:
        keys = ("precision", "channels_last", "compile", "compile_mode", "batch_size", "num_workers", "reader",
                "resize", "encoder_processes", "encoder", "compile_min_patches")
        return {key: getattr(self, key) for key in keys}


OPTIONS = [
    Option("clam_like", "fp32", False, False, num_workers=0, reader="openslide", resize="device",
           encoder_processes=0, note="CLAM on a CPU: fp32 NCHW eager, read + float resize in the main process"),
    Option("fp32", "fp32", False, False, note="eager, NCHW"),
    Option("fp32_cl", "fp32", True, False, note="eager, channels_last"),
    Option("bf16_cl", "bf16", True, False, note="eager, bf16 autocast"),
    Option("fp32_cl_jit", "fp32", compile_mode="jit", note="torch.compile (inductor, freezing)"),
    Option("bf16_cl_jit", "bf16", compile_mode="jit", note="torch.compile + bf16"),
    Option("fp32_cl_aot", "fp32", note="AOTInductor package"),
    Option("default", note="the package defaults (auto = bf16 here, AOT, tile reader)"),
    Option("default_aot", compile_min_patches=0,
           note="the defaults with the AOT package built and used whatever the patch count"),
    Option("default_openslide", reader="openslide", note="defaults, OpenSlide reader"),
    Option("default_main_w1", encoder_processes=0, num_workers=1,
           note="defaults, but a 2-thread encoder in the main process + 1 reader process"),
    Option("default_main_w2", encoder_processes=0, num_workers=2, note="same, 2 reader processes"),
    Option("default_main_w0", encoder_processes=0, num_workers=0, note="same, read in the main process"),
    Option("default_b16", batch_size=16, note="defaults, batch 16"),
    Option("default_b64", batch_size=64, note="defaults, batch 64"),
]


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------

def prepare_inputs(work: Path, n_patches: int, smoke: bool = False) -> tuple[Path, Path]:
    """The bench slide and a CLAM-style patch h5 with ``n_patches`` tissue patches (made once)."""
    import h5py

    from mmsurv.demo.slides import SlideSpec, SyntheticSlide, make_slide

    tag = "_smoke" if smoke else ""
    slide_path, patches = work / f"bench_20x_q{JPEG_QUALITY}{tag}.svs", work / f"patches_{n_patches}{tag}.h5"
    spec = SlideSpec(**(SMOKE_SLIDE if smoke else SLIDE))
    synthetic = SyntheticSlide(spec) if slide_path.exists() else make_slide(slide_path, spec,
                                                                            jpeg_quality=JPEG_QUALITY)
    if not patches.exists():
        coords = tissue_block(synthetic, n_patches)
        with h5py.File(patches, "w") as h5:
            dataset = h5.create_dataset("coords", data=coords)
            dataset.attrs.update({"patch_size": PATCH, "patch_level": 0, "downsample": [1.0, 1.0],
                                  "level_dim": [spec.width, spec.height], "name": SLIDE_NAME,
                                  "mpp": spec.mpp, "magnification": 20, "patch_size_level0": PATCH})
    return slide_path, patches


def tissue_block(synthetic, n_patches: int) -> np.ndarray:
    """The first ``n_patches`` grid patches > 50 % on tissue in row order (a contiguous block)."""
    mask = synthetic.tissue_mask(16)
    width, height = synthetic.spec.width, synthetic.spec.height
    x0, y0 = GRID_OFFSET
    coords = [(x, y) for y in range(y0, height - PATCH + 1, PATCH) for x in range(x0, width - PATCH + 1, PATCH)
              if mask[y // 16:(y + PATCH) // 16, x // 16:(x + PATCH) // 16].mean() > 0.5]
    if len(coords) < n_patches:
        raise SystemExit(f"the bench slide has only {len(coords)} tissue patches (< {n_patches})")
    return np.asarray(coords[:n_patches], dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# One measurement (child process)
# ------------------------------------------------------------------------------------------------

def measure(option: Option, mode: str, slide_path: Path, patches: Path, work: Path, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    if mode == "build":
        result = build_package(option, slide_path, patches, work / "compiled")
    elif mode == "model":
        result = model_ceiling(option, slide_path, patches, work / "compiled")
    else:
        result = end_to_end(option, slide_path, patches, work)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {**result, "option": option.label, "encoder": option.encoder, "mode": mode, "peak_rss_mb": round(own),
            "worker_peak_rss_mb": round(children), "load": round(max(load_before, os.getloadavg()[0]), 2)}


def setup(option: Option, slide_path: Path, patches: Path, cache: Path):
    """(settings, coords, plan, encoder) of ``option`` on the bench slide, as ``extract_slide_features`` makes them."""
    from mmsurv.features import ExtractSettings
    from mmsurv.features.dataset import read_patch_coords
    from mmsurv.features.encoders import build_encoder
    from mmsurv.features.plan import plan_extraction

    settings = ExtractSettings(weights="none", compile_cache_dir=str(cache), device="cpu", **option.extract_kwargs())
    coords = read_patch_coords(patches, slide_name=SLIDE_NAME)
    plan = plan_extraction(settings, slide_path, coords)
    return settings, coords, plan, build_encoder(settings.encoder, settings.weights, seed=settings.seed)


def build_package(option: Option, slide_path: Path, patches: Path, cache: Path) -> dict:
    """Compile the option's graph (AOT: build its package) in a process of its own, timed."""
    from mmsurv.features.encode import make_forward

    settings, coords, plan, built = setup(option, slide_path, patches, cache)
    t0 = time.perf_counter()
    forward = make_forward(built, plan, settings, coords)
    return {"compile_s": round(time.perf_counter() - t0, 1), "compile": forward.compiled}


def model_ceiling(option: Option, slide_path: Path, patches: Path, cache: Path) -> dict:
    """The option's forward (as the extraction loop calls it) on uint8 batches already in memory."""
    from mmsurv.features.dataset import PatchBatchDataset, reading_order
    from mmsurv.features.encode import make_forward

    settings, coords, plan, built = setup(option, slide_path, patches, cache)
    size = built.info.preprocessing.input_size
    dataset = PatchBatchDataset(slide_path, coords.coords, level=0, size=PATCH, slide_name=SLIDE_NAME,
                                resize_to=size if plan.resize == "worker" else None, reader=plan.reader)
    order = reading_order(coords.coords)
    batches = [dataset[order[i:i + settings.batch_size].tolist()]["pixels"].clone()
               for i in range(0, len(order), settings.batch_size)]
    dataset.close()
    t0 = time.perf_counter()
    forward = make_forward(built, plan, settings, coords)
    prepare_s = time.perf_counter() - t0
    if plan.encoder_processes:
        seconds = forward_in_processes(forward, batches, plan.encoder_processes)
    else:
        seconds = timed_forward(forward, batches)
    return {"patches": len(order), "seconds": round(seconds, 2), "patches_per_s": round(len(order) / seconds, 2),
            "prepare_s": round(prepare_s, 1), "precision": plan.precision, "compile": forward.compiled}


def timed_forward(forward, batches) -> float:
    """Seconds for ``forward`` over ``batches`` after one warm-up batch (oneDNN primitive creation)."""
    forward(batches[0])
    t0 = time.perf_counter()
    for batch in batches:
        forward(batch)
    return time.perf_counter() - t0


class InMemoryBatches:
    """Dataset of batches already in memory, encoded where the DataLoader fetches them."""

    def __init__(self, batches, forward):
        self.batches, self.forward = batches, forward

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.forward(self.batches[index])


def forward_in_processes(forward, batches, processes: int) -> float:
    """Seconds to encode ``batches`` in ``processes`` forked one-thread DataLoader workers.

    The same DataLoader, workers and batch assignment as the extraction's encoder processes,
    minus the slide: this is their model-only ceiling (worker start-up included, as end to end).
    """
    from torch.utils.data import DataLoader

    from mmsurv.features.dataset import batches_in_order, worker_init

    order = [index for batch in batches_in_order(np.arange(len(batches)), 1, processes) for index in batch]
    loader = DataLoader(InMemoryBatches(batches, forward), batch_size=None, sampler=order, num_workers=processes,
                        worker_init_fn=worker_init, prefetch_factor=2, multiprocessing_context="fork")
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def end_to_end(option: Option, slide_path: Path, patches: Path, work: Path) -> dict:
    """``extract_slide_features`` from the slide to h5 + pt + json on disk."""
    from mmsurv.features.extract import extract_slide_features

    t0 = time.perf_counter()
    metadata = extract_slide_features(
        slide_path, patches, work / "out" / option.name / option.encoder, slide_name=SLIDE_NAME, weights="none", device="cpu",
        compile_cache_dir=work / "compiled", force=True, **option.extract_kwargs())
    wall = time.perf_counter() - t0
    return {"patches": metadata["n_patches"], "seconds": metadata["seconds_extract"],
            "patches_per_s": metadata["patches_per_s"], "prepare_s": metadata["seconds_prepare"],
            "wall_s": round(wall, 1), "wall_patches_per_s": round(metadata["n_patches"] / wall, 2),
            "precision": metadata["precision"], "compile": metadata["compile"], "reader": metadata["reader"]}


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------

def run_child(option: Option, mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", option.name, mode, "--patches", str(args.patches),
               "--work-dir", str(args.work_dir), "--threads", str(args.threads), "--encoder", option.encoder]
    command += ["--smoke"] if args.smoke else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        return {"option": option.label, "encoder": option.encoder, "mode": mode, "error": last}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict], options: dict[str, Option]) -> str:
    lines = ["| option | precision | channels_last | compile | batch | workers | reader | ceiling patches/s | "
             "e2e patches/s | e2e / ceiling | e2e wall patches/s | AOT build s | prepare s (model / e2e) | "
             "peak RSS MB model / e2e (workers) | load | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, pair in group_by_option(rows).items():
        option, model, e2e, build = options[name], pair.get("model", {}), pair.get("e2e", {}), pair.get("build", {})
        errors = [row["error"] for row in (build, model, e2e) if "error" in row]
        if errors:
            lines.append(f"| {name} | ERROR: {errors[0]} |" + " |" * 14)
            continue
        ratio = e2e["patches_per_s"] / model["patches_per_s"] if model and e2e else float("nan")
        lines.append(
            f"| {name} | {e2e.get('precision', model.get('precision'))} | {option.channels_last} | "
            f"{e2e.get('compile', model.get('compile'))} | {option.batch_size} | {option.num_workers} | "
            f"{e2e.get('reader', option.reader)} | {model.get('patches_per_s', '')} | {e2e.get('patches_per_s', '')} "
            f"| {ratio:.0%} | {e2e.get('wall_patches_per_s', '')} | {build.get('compile_s', '-')} | "
            f"{model.get('prepare_s', '')} / "
            f"{e2e.get('prepare_s', '')} | {model.get('peak_rss_mb', '')} / {e2e.get('peak_rss_mb', '')} "
            f"({e2e.get('worker_peak_rss_mb', '')}) | {max(model.get('load', 0), e2e.get('load', 0))} | "
            f"{option.note} |")
    return "\n".join(lines)


def group_by_option(rows: list[dict]) -> dict[str, dict[str, dict]]:
    grouped: dict[str, dict[str, dict]] = {}
    for row in rows:
        grouped.setdefault(row["option"], {})[row["mode"]] = row
    return grouped


def summary(rows: list[dict]) -> list[str]:
    grouped = group_by_option(rows)
    default, clam = grouped.get("default", {}), grouped.get("clam_like", {})
    lines = []
    if "patches_per_s" in default.get("model", {}) and "patches_per_s" in default.get("e2e", {}):
        ceiling, e2e = default["model"]["patches_per_s"], default["e2e"]["patches_per_s"]
        lines.append(f"default: end to end {e2e:.1f} patches/s = {e2e / ceiling:.0%} of its ceiling {ceiling:.1f} "
                     f"(target >= 85 %); {e2e / CLAM_PATCHES_PER_S:.1f}x CLAM's ~{CLAM_PATCHES_PER_S:g} patches/s "
                     f"(target >= 5x)")
        if "patches_per_s" in clam.get("e2e", {}):
            lines.append(f"default vs CLAM-like end to end, same run: {e2e / clam['e2e']['patches_per_s']:.1f}x "
                         f"({e2e:.1f} vs {clam['e2e']['patches_per_s']:.1f} patches/s)")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=256, help="patches measured by every option (default 256)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "mmsurv_bench_extract",
                        help="slide, patch file, outputs and compiled packages (default %(default)s)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--only", nargs="+", help="run only these options")
    parser.add_argument("--list", action="store_true", help="list the options and exit")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: a 4000x3000 slide, 8 patches, the eager fp32 option only, "
                             "ResNet50-trunc and CTransPath "
                             "(the test suite runs it so that the bench keeps running)")
    parser.add_argument("--encoder", nargs="+", default=["resnet50_trunc"],
                        help="registered encoders to measure (random weights), or 'all' (default resnet50_trunc)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.patches, args.only = min(args.patches, 8), args.only or ["fp32"]
        if args.encoder == parser.get_default("encoder") and not args.child:  # and one foundation encoder (small)
            args.encoder = ["resnet50_trunc", "ctranspath"]
        if args.work_dir == parser.get_default("work_dir"):
            args.work_dir = args.work_dir.with_name(args.work_dir.name + "_smoke")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.encoder == ["all"]:
        from mmsurv.features.encoders import available_encoders

        args.encoder = available_encoders()
    base = {option.name: option for option in OPTIONS}
    options = {option.label: option for option in (replace(o, encoder=e) for e in args.encoder for o in OPTIONS)}
    if args.list:
        print("\n".join(f"{o.name}: {o.note} {asdict(o)}" for o in OPTIONS))
        return 0
    args.work_dir.mkdir(parents=True, exist_ok=True)
    slide_path, patches = prepare_inputs(args.work_dir, args.patches, args.smoke)
    if args.child:
        name, mode = args.child
        option = replace(base[name], encoder=args.encoder[0])
        print(json.dumps(measure(option, mode, slide_path, patches, args.work_dir, args.threads)))
        return 0
    import torch

    print(cpu_description())
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} threads, {args.patches} patches of {PATCH} px, load {os.getloadavg()}", flush=True)
    rows = []
    chosen = [base[n] for n in args.only] if args.only else OPTIONS
    for option in [replace(o, encoder=e) for e in args.encoder for o in chosen]:
        modes = ("build", "model", "e2e") if option.compile and option.compile_mode == "aot" else ("model", "e2e")
        for mode in modes:
            rows.append(run_child(option, mode, args))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows, options))
    print("\n".join(summary(rows)))
    failed = [row for row in rows if "error" in row]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
