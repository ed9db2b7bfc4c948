"""``mmsurv predict``: a trained run's fold models applied to a table of new patients."""

from __future__ import annotations

import argparse

from mmsurv.predict.apply import CHECKPOINTS, DEFAULT_MAX_MISSING_GENOMIC


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="risks of new patients from a trained run's fold checkpoints (no config needed)",
        description=(
            "Apply every fold model of RUN_DIR (results/<cohort>/<model>) to the patients of TABLE and write "
            "OUT (TSV): case_id, risk_fold<k> per fold, risk (their mean), cutoff (the training cohort's "
            "median out-of-fold risk), group (high when risk >= cutoff) and, when TABLE has them, "
            "survival_months and censorship. TABLE needs case_id and slide_id; genomic columns are matched "
            "by name to the training's."
        ),
    )
    parser.add_argument("--run-dir", required=True, help="a trained cohort x model folder with fold<k>/ inside")
    parser.add_argument("--table", required=True, help="the new patients' table (MCAT format; survival optional)")
    parser.add_argument("--features-dir", help="their pt_files folder (models that read WSI features)")
    parser.add_argument("--out", required=True, help="output TSV")
    parser.add_argument("--checkpoint", choices=tuple(CHECKPOINTS), default="last", help="which checkpoint (default: last)")
    parser.add_argument("--max-missing-genomic", type=float, default=DEFAULT_MAX_MISSING_GENOMIC,
                        help="largest share of the model's genomic columns the table may lack (filled with the "
                             f"training mean; default {DEFAULT_MAX_MISSING_GENOMIC})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmsurv.data.cohort import read_cohort_table
    from mmsurv.io import write_tsv
    from mmsurv.predict.apply import predict_run

    table = read_cohort_table(args.table, require_survival=False)
    frame = predict_run(args.run_dir, table, features_dir=args.features_dir, variant=args.checkpoint,
                        max_missing_genomic=args.max_missing_genomic)
    write_tsv(frame, args.out, float_format="%.17g")
    print(args.out)
    return 0
