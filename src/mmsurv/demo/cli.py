"""``mmsurv demo-cohort``: write the offline demo cohort (slides, table, splits, manifest)."""

from __future__ import annotations

import argparse

from mmsurv.demo.cohort import DemoSpec, generate_demo_cohort


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo-cohort`` subcommand."""
    parser = subparsers.add_parser(
        "demo-cohort",
        help="generate the synthetic demo cohort",
        description=(
            "Write a synthetic TCGA-like cohort into OUTDIR: Aperio-style slides, an MCAT-format "
            "table and signatures file, 5-fold splits and a GDC manifest. Deterministic for a seed."
        ),
    )
    defaults = DemoSpec()
    parser.add_argument("outdir", help="output folder (created if missing)")
    parser.add_argument("--patients", type=int, default=defaults.patients, help="number of patients (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--width", type=int, default=defaults.width, help="slide width in level-0 px (default %(default)s)")
    parser.add_argument("--height", type=int, default=defaults.height, help="slide height in level-0 px (default %(default)s)")
    parser.add_argument("--genes", type=int, default=defaults.genes, help="number of genes (default %(default)s)")
    parser.add_argument("--folds", type=int, default=defaults.folds, help="cross-validation folds (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="processes writing slides (default %(default)s)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    spec = DemoSpec(
        patients=args.patients, seed=args.seed, width=args.width, height=args.height, genes=args.genes, folds=args.folds
    )
    cohort = generate_demo_cohort(args.outdir, spec, workers=args.workers)
    print(f"demo cohort written to {cohort.outdir} (manifest: {cohort.manifest}, table: {cohort.table})")
    return 0
