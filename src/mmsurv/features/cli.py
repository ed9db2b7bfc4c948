"""``mmsurv features extract``: patch features of one slide (what the Snakemake feature rule runs).

torch is imported only when the command runs, so the rest of the CLI starts fast.
"""

from __future__ import annotations

import argparse
import json
import os

from mmsurv.features import COMPILE_MODES, DEFAULTS, PRECISIONS, READERS, RESIZE_PLACES
from mmsurv.naming import slide_stem


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``features`` subcommand group."""
    features = subparsers.add_parser("features", help="patch feature extraction",
                                     description="Patch feature extraction from whole-slide images.")
    commands = features.add_subparsers(dest="features_command", metavar="COMMAND", required=True)
    extract = commands.add_parser(
        "extract",
        help="extract the patch features of one slide",
        description=(
            "Read the patches of PATCHES.h5 (CLAM format) from the slide, encode them and write "
            "OUT_DIR/h5_files/<slide>.h5, OUT_DIR/pt_files/<slide>.pt and OUT_DIR/json/<slide>.json. "
            "A valid existing output is kept."
        ),
    )
    _add_arguments(extract)
    extract.set_defaults(func=_run_extract)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slide", required=True, help="the slide file (e.g. .svs)")
    parser.add_argument("--patches", required=True, help="the patching stage's <slide>.h5 with 'coords'")
    parser.add_argument("--out-dir", required=True, help="the 'features' output folder")
    parser.add_argument("--name", help="slide name for outputs and messages (default: slide file name without extension)")
    parser.add_argument("--encoder", default=DEFAULTS.encoder, help="registered encoder (default %(default)s)")
    parser.add_argument("--weights", default=DEFAULTS.weights,
                        help="'imagenet' (torch hub cache), 'none' (random init, demo only) or a checkpoint "
                             "path (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="default %(default)s")
    parser.add_argument("--workers", type=int, default=DEFAULTS.num_workers,
                        help="DataLoader reader processes, 0 = read in the main process (default %(default)s)")
    parser.add_argument("--device", default=DEFAULTS.device, help="'auto' (CUDA if present, else CPU), 'cpu', 'cuda:0'...")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS.precision,
                        help="bf16/fp16 use autocast; tf32 is CUDA-only TF32 math; auto = bf16 on CPUs with "
                             "native bf16 (AMX/AVX512-BF16), else fp32 (default %(default)s)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=DEFAULTS.channels_last,
                        help="NHWC memory format (default %(default)s)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=DEFAULTS.compile,
                        help="compile the encoder with inductor (default %(default)s)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default=DEFAULTS.compile_mode,
                        help="aot: AOTInductor package built once and loaded by every slide; jit: torch.compile "
                             "in each process (default %(default)s)")
    parser.add_argument("--compile-cache-dir", help="where compiled packages and inductor's cache go "
                                                    "(default ~/.cache/mmsurv/compiled; put it under the run folder)")
    parser.add_argument("--reader", choices=READERS, default=DEFAULTS.reader,
                        help="patch reader: auto = decode JPEG tiles directly when that gives OpenSlide's pixels "
                             "exactly on the slide, else OpenSlide (default %(default)s)")
    parser.add_argument("--resize", choices=RESIZE_PLACES, default=DEFAULTS.resize,
                        help="where patches are resized to the encoder input: uint8 in the workers or float on "
                             "the device; 'auto' = workers on CPU, device on CUDA (default %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads of the main process (default: all usable cores)")
    parser.add_argument("--encoder-processes", type=int, default=DEFAULTS.encoder_processes,
                        help="CPU: worker processes that each read and encode with one thread; 0 = encode in "
                             "the main process with --threads threads and --workers readers (default: one per "
                             "thread)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random-init seed for --weights none")
    parser.add_argument("--force", action="store_true", help="recompute even if valid outputs exist")


def _run_extract(args: argparse.Namespace) -> int:
    import torch

    from mmsurv.features.extract import extract_slide_features

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    name = args.name or slide_stem(args.slide)
    metadata = extract_slide_features(
        args.slide, args.patches, args.out_dir, slide_name=name, encoder=args.encoder, weights=args.weights,
        batch_size=args.batch_size, num_workers=args.workers, device=args.device, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, compile_mode=args.compile_mode,
        compile_cache_dir=args.compile_cache_dir, resize=args.resize, reader=args.reader, seed=args.seed,
        encoder_processes=args.encoder_processes, force=args.force,
    )
    summary = {k: metadata[k] for k in ("slide", "n_patches", "feature_dim", "weights", "pretrained", "precision",
                                        "compile", "reader", "patches_per_s", "skipped")}
    print(json.dumps(summary))
    return 0
