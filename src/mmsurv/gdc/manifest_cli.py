"""``mmsurv manifest clean``: GDC manifest + cohort table → cleaned manifest, sample sheet, dropped rows."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``manifest`` subcommand group."""
    manifest = subparsers.add_parser("manifest", help="GDC manifest tools", description="GDC manifest tools.")
    actions = manifest.add_subparsers(dest="action", metavar="ACTION", required=True)
    clean = actions.add_parser(
        "clean",
        help="keep diagnostic slides of the cohort's cases",
        description=(
            "Validate a GDC manifest (id filename md5 size state), keep diagnostic (-DX) .svs slides "
            "whose case is in the cohort table, drop exact duplicate rows, and write the cleaned "
            "manifest, a per-slide sample sheet and a TSV of every dropped row with its reason."
        ),
    )
    clean.add_argument("--manifest", required=True, help="GDC manifest (tab-separated)")
    clean.add_argument("--table", required=True, help="MCAT-format cohort table (.csv or .csv.gz)")
    clean.add_argument("--out-dir", required=True, help="folder for manifest.tsv, samples.tsv and dropped.tsv")
    clean.set_defaults(func=_run_clean)


def _run_clean(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    from mmsurv.gdc.manifest import clean_manifest_files

    result = clean_manifest_files(
        args.manifest, args.table, out_dir / "manifest.tsv", out_dir / "samples.tsv", out_dir / "dropped.tsv"
    )
    print(result.summary())
    return 0
