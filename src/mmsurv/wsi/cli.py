"""``mmsurv wsi patch``: tissue segmentation and patch coordinates for slides, without Snakemake.

Who uses this: people running or debugging the patching stage by hand; the workflow calls the same
``mmsurv.wsi.patching.segment_and_patch``. Each slide is processed independently: a slide that fails
(unopenable, unreadable) is reported by name and the others still run; the exit code is 1 if any
failed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmsurv.wsi.outputs import DEFAULT_VIS_MAX_SIDE, output_paths
from mmsurv.wsi.patch import DEFAULT_MIN_TISSUE_FRACTION
from mmsurv.wsi.patching import segment_and_patch
from mmsurv.wsi.presets import DEFAULT_PRESET, PRESETS
from mmsurv.wsi.slide import DEFAULT_MPP, SlideError, slide_name_of

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``wsi`` subcommand group with ``wsi patch``."""
    wsi = subparsers.add_parser("wsi", help="whole-slide image processing",
                                description="Whole-slide image processing.")
    actions = wsi.add_subparsers(dest="wsi_command", metavar="ACTION", required=True)
    parser = actions.add_parser(
        "patch",
        help="segment tissue and write patch coordinates",
        description=(
            "Segment tissue on a low-resolution image of each SLIDE and write CLAM-compatible "
            "outputs under OUT_DIR: patches/<slide>.h5 (level-0 coords), masks/<slide>.png, "
            "stitches/<slide>.png and <slide>.json (written last). Slide name = file name "
            "without extension."
        ),
    )
    parser.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files (.svs, .tiff, ...)")
    parser.add_argument("--out-dir", required=True, help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                        help="CLAM-equivalent segmentation preset (default %(default)s)")
    parser.add_argument("--magnification", type=float, default=20.0,
                        help="target magnification of the patches (default %(default)s)")
    parser.add_argument("--patch-size", type=int, default=512,
                        help="patch side in pixels at the target magnification (default %(default)s)")
    parser.add_argument("--step-size", type=int, default=None,
                        help="stride in pixels at the target magnification (default: patch size)")
    parser.add_argument("--min-tissue-fraction", type=float, default=DEFAULT_MIN_TISSUE_FRACTION,
                        help="keep patches with at least this tissue fraction (default %(default)s)")
    seg = parser.add_argument_group("segmentation overrides (default: the preset's values)")
    seg.add_argument("--sthresh", type=int, help="saturation threshold 0-255")
    seg.add_argument("--mthresh", type=int, help="median blur kernel (odd)")
    seg.add_argument("--close", type=int, help="morphological close kernel (px)")
    seg.add_argument("--otsu", dest="use_otsu", action="store_const", const=True,
                     help="Otsu threshold instead of --sthresh")
    seg.add_argument("--min-tissue-mm2", type=float, help="minimum tissue piece area (mm²)")
    seg.add_argument("--min-hole-mm2", type=float, help="minimum hole area (mm²)")
    seg.add_argument("--max-n-holes", type=int, help="holes kept per tissue piece")
    seg.add_argument("--seg-downsample", type=float, help="segment on the level closest to this downsample")
    seg.add_argument("--thumbnail-mpp", type=float,
                     help="µm/px of the thumbnail when no level is coarse enough")
    parser.add_argument("--default-mpp", type=float, default=DEFAULT_MPP,
                        help="µm/px when a slide states neither MPP nor magnification (default %(default)s)")
    parser.add_argument("--vis-max-side", type=int, default=DEFAULT_VIS_MAX_SIDE,
                        help="longest side of the PNGs (default %(default)s)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip slides whose <slide>.json already exists")
    parser.set_defaults(func=_run_patch)


SEGMENT_OPTIONS = ("sthresh", "mthresh", "close", "use_otsu", "min_tissue_mm2", "min_hole_mm2",
                   "max_n_holes", "seg_downsample", "thumbnail_mpp")


def _run_patch(args: argparse.Namespace) -> int:
    segment = {key: getattr(args, key) for key in SEGMENT_OPTIONS if getattr(args, key) is not None}
    patch = {"magnification": args.magnification, "patch_size": args.patch_size,
             "step_size": args.step_size, "min_tissue_fraction": args.min_tissue_fraction}
    failed: list[str] = []
    for slide in args.slides:
        name = slide_name_of(slide)
        if args.skip_existing and output_paths(args.out_dir, name).summary.exists():
            print(f"{name}: already done, skipped")
            continue
        try:
            summary = segment_and_patch(slide, args.out_dir, slide_name=name, preset=args.preset,
                                        segment=segment, patch=patch, default_mpp=args.default_mpp,
                                        vis_max_side=args.vis_max_side)
        except SlideError as error:
            log.error("%s", error)
            print(f"{name}: FAILED: {error}")
            failed.append(name)
            continue
        print(f"{name}: {summary['patch_count']} patches, {summary['tissue_area_mm2']:.3f} mm² "
              f"tissue ({summary['status']}, {summary['seconds']['total']:.1f} s)")
    if failed:
        print(f"{len(failed)} of {len(args.slides)} slides failed: {', '.join(failed)}")
        return 1
    print(f"outputs in {Path(args.out_dir)}")
    return 0
