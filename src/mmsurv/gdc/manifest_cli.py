"""``mmsurv manifest clean``: GDC manifest or sample sheet + cohort table → cleaned manifest, sample sheet, dropped rows."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``manifest`` subcommand group."""
    manifest = subparsers.add_parser("manifest", help="GDC manifest tools", description="GDC manifest tools.")
    actions = manifest.add_subparsers(dest="action", metavar="ACTION", required=True)
    clean = actions.add_parser(
        "clean",
        help="keep the slides of the cohort's cases",
        description=(
            "Validate a GDC manifest (id filename md5 size state) or a sample sheet (case_id slide_id "
            "[md5 size]), keep the slides OpenSlide reads whose case is in the cohort table (TCGA "
            "cohorts: diagnostic -DX slides only), drop exact duplicate rows, and write the cleaned "
            "manifest, a per-slide sample sheet, a TSV of every dropped row with its reason and a "
            "summary.json (with the table cases that have no slide)."
        ),
    )
    source = clean.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="GDC manifest (tab-separated)")
    source.add_argument("--samples", help="sample sheet (CSV or TSV: case_id, slide_id file name, optional md5, size)")
    clean.add_argument("--tcga", action=argparse.BooleanOptionalAction, default=None,
                       help="apply TCGA rules (barcodes, DX slides only); default: yes for --manifest, no for --samples")
    clean.add_argument("--table", required=True, help="MCAT-format cohort table (CSV, gzip or zip, read by content)")
    clean.add_argument("--out-dir", required=True,
                       help="folder for manifest.tsv, samples.tsv, dropped.tsv and summary.json")
    clean.set_defaults(func=_run_clean)


def _run_clean(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    from mmsurv.gdc.manifest import clean_manifest_files

    result = clean_manifest_files(
        args.manifest, args.table, out_dir / "manifest.tsv", out_dir / "samples.tsv", out_dir / "dropped.tsv",
        sample_sheet=args.samples, tcga=args.tcga, out_summary=out_dir / "summary.json",
    )
    print(result.summary())
    return 0
