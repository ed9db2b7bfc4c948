"""``mmsurv heatmap``: one fold's patch scores on one slide — overlay, top/bottom patches, table, GeoJSON."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``heatmap`` subcommand."""
    parser = subparsers.add_parser(
        "heatmap",
        help="a trained fold's patch scores drawn on a slide (overlay, top/bottom patches, GeoJSON for QuPath)",
        description=(
            "Load FOLD_DIR's checkpoint, run the model on SLIDE's patch features and write into OUT_DIR: "
            "SLIDE.heatmap.png (the scores over the slide's thumbnail), SLIDE.patches.png (the top-k and "
            "bottom-k patches at full resolution), SLIDE.scores.tsv (x, y, size and the scores of every patch) "
            "and SLIDE.geojson (the patches as QuPath tiles with the scores as measurements)."
        ),
    )
    parser.add_argument("--fold-dir", required=True, help="a trained fold (RESULTS/COHORT/MODEL/foldK)")
    parser.add_argument("--slide", required=True, help="slide id or file name (its features: FEATURES_DIR/SLIDE.pt)")
    parser.add_argument("--features-dir", required=True, help="the cohort's pt_files folder (h5_files beside it)")
    parser.add_argument("--slide-file", help="the slide image (default: SLIDES_DIR/SLIDE.*)")
    parser.add_argument("--slides-dir", help="folder holding the slide image (with --slide-file unset)")
    parser.add_argument("--cohort-table", help="the cohort table (needed by models that read genomics)")
    parser.add_argument("--out-dir", default=".", help="output folder (default: .)")
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last", help="which checkpoint (default: last)")
    parser.add_argument("--group", help="the score row to draw (a genomic group / pathway / bin; default: the first)")
    parser.add_argument("--top-k", type=int, default=8, help="patches in each montage row (default: 8)")
    parser.add_argument("--max-side", type=int, default=2048, help="longest side of the overlay in pixels (default: 2048)")
    parser.add_argument("--alpha", type=float, default=0.4, help="overlay opacity (default: 0.4, CLAM's)")
    parser.add_argument("--cmap", default="jet", help="matplotlib colormap (default: jet, CLAM's)")
    parser.add_argument("--normalize", choices=("percentile", "minmax", "none"), default="percentile",
                        help="score scaling before the colormap (default: percentile, CLAM's)")
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian blur sigma in overlay pixels (default: 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmsurv.heatmap.outputs import find_slide_file, write_outputs
    from mmsurv.heatmap.scores import slide_scores

    if not args.slide_file and not args.slides_dir:
        raise SystemExit("mmsurv heatmap: give --slide-file or --slides-dir")
    slide_file = args.slide_file or find_slide_file(args.slides_dir, args.slide)
    scores = slide_scores(args.fold_dir, args.slide, features_dir=args.features_dir, cohort_table=args.cohort_table,
                          variant=args.checkpoint)
    paths = write_outputs(scores, slide_file, args.out_dir, group=args.group, top_k=args.top_k,
                          max_side=args.max_side, alpha=args.alpha, cmap=args.cmap, normalize=args.normalize,
                          blur=args.blur)
    for path in paths.values():
        print(path)
    return 0
