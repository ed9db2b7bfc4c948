"""``mmsurv report``: build the c-index/efficiency tables, Kaplan–Meier curves and figures from trained folds."""

from __future__ import annotations

import argparse

from mmsurv.report.settings import DEFAULT_N_BOOT, DEFAULT_REFERENCE_BAG_SIZE, DEFAULT_SEED, MEDIAN_SPLITS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser(
        "report",
        help="tables, Kaplan-Meier curves and figures from trained folds",
        description=(
            "Summarise RESULTS/{cohort}/{model}/fold{k}/ (metrics.json, predictions.tsv, predictions_best.tsv) "
            "into OUT_DIR: c-index tables (last and best epoch; CSV, Markdown, LaTeX), the efficiency table "
            "(parameters, FLOPs at the reference and the median bag size, s/epoch, peak memory), Kaplan-Meier "
            "figures per cohort x model and per model, the log-rank tests, a c-index vs FLOPs bubble chart, and the survival "
            "statistics (Harrell's and Uno's C, IBS, time-dependent AUC with bootstrap intervals, paired model "
            "comparisons with a significance matrix, calibration figures). "
            "Training outputs are only read."
        ),
    )
    parser.add_argument("--results", default="results", help="results folder of the workflow (default: results)")
    parser.add_argument("--cohorts", nargs="+", help="cohorts to report (default: every one found in --results)")
    parser.add_argument("--models", nargs="+", help="models to report (default: every one found)")
    parser.add_argument("--out-dir", help="output folder (default: RESULTS/report)")
    parser.add_argument("--folds", type=int, help="require folds 0..K-1 (default: the folds found)")
    parser.add_argument("--reference-bag-size", type=int, default=DEFAULT_REFERENCE_BAG_SIZE,
                        help=f"patches per patient for the reference FLOP count (default: {DEFAULT_REFERENCE_BAG_SIZE})")
    parser.add_argument("--median-split", choices=MEDIAN_SPLITS, default="fold_train",
                        help="KM risk groups: per-fold median (training risks when saved, else the fold's "
                             "validation risks) or the pooled median of all out-of-fold risks (default: fold_train)")
    parser.add_argument("--km-variant", choices=("last", "best"), default="last",
                        help="predictions used for the KM curves: last or best epoch (default: last)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_N_BOOT,
                        help=f"bootstrap resamples of the statistics' intervals and paired comparisons "
                             f"(default: {DEFAULT_N_BOOT})")
    parser.add_argument("--bootstrap-seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the bootstrap resamples (default: {DEFAULT_SEED})")
    parser.add_argument("--papers", nargs="*", default=[], metavar="PAPER",
                        help="founding papers whose results tables to write beside ours (cancermoe, survmamba)")
    parser.add_argument("--pdf", action="store_true", help="also save every figure as PDF")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmsurv.report.build import build_report

    out_dir = args.out_dir or str(Path(args.results) / "report")
    paths = build_report(args.results, args.cohorts, args.models, out_dir, folds=args.folds,
                         reference_bag_size=args.reference_bag_size, median_split=args.median_split,
                         pdf=args.pdf, km_variant=args.km_variant, bootstrap=args.bootstrap,
                         bootstrap_seed=args.bootstrap_seed, papers=args.papers)
    print(f"report: {len(paths)} files written to {out_dir}")
    return 0
