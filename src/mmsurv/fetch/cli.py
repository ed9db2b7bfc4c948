"""``mmsurv fetch local``: verify slides in a local folder against a sample sheet and link them."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from mmsurv.fetch.local import LINK_MODES, fetch_local


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fetch`` subcommand group."""
    fetch = subparsers.add_parser("fetch", help="bring a cohort's slides into the run folder", description="Bring slides into the run's slide folder.")
    sources = fetch.add_subparsers(dest="source", metavar="SOURCE", required=True)
    local = sources.add_parser(
        "local",
        help="verify slides in a local folder and link them",
        description=(
            "For each slide of a sample sheet (from 'mmsurv manifest clean'), check SOURCE_DIR/<slide_id> "
            "against the manifest's size and md5 and link it as OUT_DIR/<slide_id> (same file name and format)."
        ),
    )
    local.add_argument("--samples", required=True, help="sample sheet TSV written by 'mmsurv manifest clean'")
    local.add_argument("--source-dir", required=True, help="folder holding the slide files, named as in the manifest")
    local.add_argument("--out-dir", required=True, help="the run's slide folder")
    local.add_argument("--slides", nargs="+", help="only these slides (names without extension)")
    local.add_argument("--no-md5", action="store_true", help="check sizes only (fast)")
    local.add_argument("--link", choices=LINK_MODES, default="symlink", help="how to place slides (default %(default)s)")
    local.set_defaults(func=_run_local)


def _run_local(args: argparse.Namespace) -> int:
    from mmsurv.gdc.manifest import read_samples

    samples = read_samples(args.samples)
    if args.slides:
        unknown = sorted(set(args.slides) - set(samples["slide"]))
        if unknown:
            raise ValueError(f"{args.samples}: no slide named {', '.join(unknown)}")
        samples = samples.loc[samples["slide"].isin(args.slides)]
    for row in tqdm(list(samples.itertuples(index=False)), desc="verify slides", unit="slide"):
        fetch_local(
            Path(args.source_dir) / row.slide_id, Path(args.out_dir) / row.slide_id,
            slide=row.slide, size=int(row.size), md5=row.md5, verify_md5=not args.no_md5, mode=args.link,
        )
    print(f"{len(samples)} slides verified and linked into {args.out_dir}")
    return 0
