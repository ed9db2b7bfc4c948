"""Genomic groups: MCAT signature families on the real tables, and the pathway rule."""

from __future__ import annotations

import pandas as pd
import pytest

from mmsurv.data.cohort import CohortError, read_cohort_table, read_signatures, signature_groups
from mmsurv.data.dataset import group_indices
from mmsurv.data.pathways import pathway_groups, read_gene_sets
from mmsurv_testdata import shared_path


@pytest.mark.parametrize("study, sizes", [("blca", [94, 334, 521, 468, 1496, 479]), ("ucec", [3, 24, 21, 22, 65, 15])])
def test_signature_group_sizes_on_real_tables(study, sizes):
    table = read_cohort_table(shared_path("data", "tcga", "tables", f"tcga_{study}_all_clean.csv.gz"))
    groups = signature_groups(table.genomics.columns, read_signatures(shared_path("data", "tcga", "signatures.csv")))
    assert [len(group) for group in groups.values()] == sizes


def test_pathway_rule_rnaseq_columns_present_sorted(tmp_path):
    path = tmp_path / "sets.csv"
    pd.DataFrame({"P1": ["B", "A", "MISSING", "A"], "P2": ["ZZZ", None, None, None], "P3": ["C", None, None, None]}
                 ).to_csv(path, index=False)
    sets = read_gene_sets(path)
    assert sets["P1"] == ["B", "A", "MISSING"]
    columns = ["A_rnaseq", "B_rnaseq", "B_cnv", "C_mut", "C_rnaseq", "D_rnaseq"]
    groups = pathway_groups(columns, sets)
    assert groups == {"P1": ["A_rnaseq", "B_rnaseq"], "P3": ["C_rnaseq"]}  # P2 has no column: left out
    assert pathway_groups(columns, sets, suffixes=("_rnaseq", "_cnv"))["P1"] == ["A_rnaseq", "B_cnv", "B_rnaseq"]
    with pytest.raises(CohortError, match="no pathway"):
        pathway_groups(columns, sets, min_size=5)


def test_hallmark_pathways_on_blca():
    table = read_cohort_table(shared_path("data", "tcga", "tables", "tcga_blca_all_clean.csv.gz"))
    groups = pathway_groups(table.genomics.columns, read_gene_sets(shared_path("data", "pathways", "hallmarks_signatures.csv")))
    assert 0 < len(groups) <= 50
    assert all(column.endswith("_rnaseq") for group in groups.values() for column in group)


def test_group_indices_name_unknown_columns():
    assert [i.tolist() for i in group_indices(["a", "b", "c"], {"g": ["c", "a"]})] == [[2, 0]]
    with pytest.raises(CohortError, match="'zz'"):
        group_indices(["a"], {"g": ["zz"]})
