"""Pathway groups of genomic columns from gene-set files (SurvPath's Hallmarks / Reactome+PID sets).

A gene-set file has one column per pathway holding gene symbols, NaN-padded (the format of
``hallmarks_signatures.csv``, ``xena_signatures.csv`` and ``combine_signatures.csv``).

The rule (:func:`pathway_groups`): a pathway's group is the columns ``GENE + suffix`` for its genes
and the chosen suffixes (default ``_rnaseq`` only, as SurvPath groups transcriptomics) that the
cohort table HAS, sorted by name as MCAT sorts its signature groups; duplicates are removed.
Pathways with fewer than ``min_size`` present columns (default 1, i.e. empty ones) are left out
and counted in the log, because an empty group has no encoder input.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import pandas as pd

from mmsurv.data.cohort import CohortError, genomic_columns

log = logging.getLogger(__name__)

DEFAULT_SUFFIXES = ("_rnaseq",)


def read_gene_sets(path: str | os.PathLike) -> dict[str, list[str]]:
    """Pathway name → gene symbols (first occurrence order, blanks dropped)."""
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise CohortError(f"{path}: cannot be read as a gene-set CSV ({error})") from error
    sets = {}
    for column in table.columns:
        genes = table[column].dropna().str.strip()
        sets[str(column)] = list(dict.fromkeys(gene for gene in genes if gene))
    if not any(sets.values()):
        raise CohortError(f"{path}: no pathway column lists any gene")
    return sets


def pathway_groups(columns, gene_sets: dict[str, list[str]], suffixes=DEFAULT_SUFFIXES,
                   min_size: int = 1) -> dict[str, list[str]]:
    """Pathway → sorted table columns ``GENE+suffix`` present; pathways under ``min_size`` dropped."""
    available = set(genomic_columns(columns))
    groups: dict[str, list[str]] = {}
    dropped = []
    for name, genes in gene_sets.items():
        members = sorted({gene + suffix for gene in genes for suffix in suffixes} & available)
        if len(members) >= min_size:
            groups[name] = members
        else:
            dropped.append(name)
    if dropped:
        log.info("pathway groups: %d of %d pathway(s) have fewer than %d column(s) in the table and are left out (e.g. %s)",
                 len(dropped), len(gene_sets), min_size, dropped[0])
    if not groups:
        raise CohortError(f"pathway groups: no pathway has {min_size}+ of its genes (suffixes {', '.join(suffixes)}) in the table")
    return groups


def pathway_coverage(columns, gene_sets: dict[str, list[str]], suffixes: Sequence[str] = ("_rnaseq",)):
    """Each pathway's coverage in a cohort table: a DataFrame ``pathway, n_genes, n_present, coverage``.

    ``n_present`` counts the genes of the set with at least one ``GENE + suffix`` column in the
    table (the grouping rule of :func:`mmsurv.data.pathways.pathway_groups`); sorted by coverage."""
    available = set(genomic_columns(columns))
    rows = []
    for name, genes in gene_sets.items():
        present = sum(any(gene + suffix in available for suffix in suffixes) for gene in genes)
        rows.append({"pathway": name, "n_genes": len(genes), "n_present": present,
                     "coverage": present / len(genes) if genes else 0.0})
    return pd.DataFrame(rows).sort_values(["coverage", "pathway"], ascending=[False, True]).reset_index(drop=True)
