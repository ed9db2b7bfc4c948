"""``mmsurv pathways``: gene-set tools for pathway-token models (SurvPath, SurvMamba).

``coverage`` prints how much of each pathway a cohort table measures and what a minimum size
(``data.pathway_min_size``) would drop; ``hierarchy`` builds SurvMamba's function → process CSV.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pathways`` subcommand and its two actions."""
    parser = subparsers.add_parser("pathways", help="pathway gene sets: coverage in a cohort table, "
                                   "SurvMamba's process hierarchy")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    coverage = actions.add_parser("coverage", help="each pathway's genes present in a cohort table")
    coverage.add_argument("--table", required=True, help="cohort table (CSV, gzip allowed)")
    coverage.add_argument("--pathways", required=True, help="gene-set CSV (one column per pathway)")
    coverage.add_argument("--suffixes", default="_rnaseq", help="comma-separated column suffixes (default _rnaseq)")
    coverage.add_argument("--min-sizes", default="1,5,10", help="minimum sizes to summarise (default 1,5,10)")
    coverage.add_argument("--out", help="write the per-pathway table here (TSV)")
    coverage.set_defaults(func=_coverage)
    hierarchy = actions.add_parser("hierarchy", help="group a gene-set CSV's pathways into processes by gene overlap")
    hierarchy.add_argument("gene_sets", help="gene-set CSV (one column per pathway)")
    hierarchy.add_argument("out", help="the process,function CSV to write")
    hierarchy.add_argument("--processes", type=int, default=42, help="number of processes (default 42, SurvMamba's)")
    hierarchy.set_defaults(func=_hierarchy)


def _coverage(args: argparse.Namespace) -> int:
    from mmsurv.data.cohort import read_cohort_table
    from mmsurv.data.pathways import pathway_coverage, read_gene_sets
    from mmsurv.io import write_tsv

    table = read_cohort_table(args.table)
    frame = pathway_coverage(table.genomics.columns, read_gene_sets(args.pathways), tuple(args.suffixes.split(",")))
    if args.out:
        write_tsv(frame, args.out)
    print(f"{len(frame)} pathways; genes present per pathway: median {frame.n_present.median():.0f}, "
          f"coverage median {frame.coverage.median():.2f}")
    for min_size in (int(value) for value in args.min_sizes.split(",")):
        kept = frame[frame.n_present >= min_size]
        print(f"pathway_min_size {min_size}: keeps {len(kept)} pathways ({int(kept.n_present.sum())} gene slots), "
              f"drops {len(frame) - len(kept)}")
    return 0


def _hierarchy(args: argparse.Namespace) -> int:
    from mmsurv.data.hierarchy import build_hierarchy, write_hierarchy
    from mmsurv.data.pathways import read_gene_sets

    rows = build_hierarchy(read_gene_sets(args.gene_sets), args.processes)
    write_hierarchy(rows, args.out)
    print(f"{args.out}: {len(rows)} functions in {len({process for process, _ in rows})} processes")
    return 0
