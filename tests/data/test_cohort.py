"""Cohort tables: metadata by name, genomics by suffix, MCAT signature groups; real tables too."""

from __future__ import annotations

import pandas as pd
import pytest

from mmsurv.data.cohort import (
    CohortError,
    genomic_columns,
    read_cohort_table,
    read_signatures,
    signature_groups,
)
from mmsurv_testdata import shared_path


def test_demo_table_loads_with_metadata_and_genomics(demo_cohort):
    cohort = read_cohort_table(demo_cohort.table)
    assert list(cohort.metadata.columns[:4]) == ["case_id", "slide_id", "survival_months", "censorship"]
    assert all(column.endswith(("_rnaseq", "_cnv", "_mut")) for column in cohort.genomics.columns)
    assert not any(column.startswith("Unnamed") for column in cohort.genomics.columns)
    assert len(cohort.patients()) == cohort.metadata["case_id"].nunique()


def test_demo_groups_follow_the_signatures(demo_cohort):
    cohort = read_cohort_table(demo_cohort.table)
    families = read_signatures(demo_cohort.signatures)
    groups = signature_groups(cohort.genomics.columns, families)
    assert list(groups) == list(families)
    columns = set(cohort.genomics.columns)
    for family, genes in families.items():
        expected = sorted(f"{gene}{suffix}" for gene in genes for suffix in ("_mut", "_cnv", "_rnaseq")
                          if f"{gene}{suffix}" in columns)
        assert groups[family] == expected
        assert groups[family], f"family {family} is empty"
    assert not any(column.startswith("XG") for group in groups.values() for column in group)


def test_selection_is_by_name_not_position(tmp_path):
    shuffled = pd.DataFrame(
        {"B_cnv": [1, 0], "censorship": [0, 1], "Unnamed: 0": [0, 1], "A_rnaseq": [0.5, -0.5],
         "slide_id": ["s1.svs", "s2.svs"], "survival_months": [3.0, 7.5], "case_id": ["TCGA-AA-0001", "TCGA-AA-0002"],
         "train": [1, 0]}
    )
    shuffled.to_csv(tmp_path / "t.csv", index=False)
    cohort = read_cohort_table(tmp_path / "t.csv")
    assert cohort.metadata["survival_months"].tolist() == [3.0, 7.5]
    assert list(cohort.genomics.columns) == ["B_cnv", "A_rnaseq"]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("survival_months", "soon", "row 3 .*'survival_months' 'soon'"), ("censorship", "2", "row 3 .*'censorship'")],
)
def test_bad_survival_values_name_row_and_field(tmp_path, column, value, message):
    rows = {"case_id": ["TCGA-AA-0001", "TCGA-AA-0002"], "slide_id": ["a.svs", "b.svs"],
            "survival_months": ["1.0", "2.0"], "censorship": ["0", "1"]}
    rows[column][1] = value
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(CohortError, match=message):
        read_cohort_table(tmp_path / "t.csv")


@pytest.mark.parametrize(("value", "message"), [("high", "row 3: genomic column 'B_cnv' holds 'high', not a number"),
                                              ("", "row 3: genomic column 'B_cnv' is missing")])
def test_a_genomic_value_that_is_not_a_number_names_row_and_column(tmp_path, value, message):
    rows = {"case_id": ["TCGA-AA-0001", "TCGA-AA-0002"], "slide_id": ["a.svs", "b.svs"],
            "survival_months": [1.0, 2.0], "censorship": [0, 1], "A_rnaseq": [0.1, 0.2], "B_cnv": ["1", value]}
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(CohortError, match=message):
        read_cohort_table(tmp_path / "t.csv")


def test_missing_required_column_is_named(tmp_path):
    pd.DataFrame({"case_id": ["x"], "slide_id": ["y"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(CohortError, match="missing column.*survival_months"):
        read_cohort_table(tmp_path / "t.csv")


REAL = {"blca": (437, 373, 169), "luad": (516, 453, 158), "ucec": (539, 480, 75)}


@pytest.mark.shared
@pytest.mark.parametrize("study", sorted(REAL))
def test_real_mcat_tables_load_through_the_same_loader(study):
    cohort = read_cohort_table(shared_path("data", "tcga", "tables", f"tcga_{study}_all_clean.csv.gz"))
    slides, cases, deaths = REAL[study]
    patients = cohort.patients()
    assert (len(cohort.metadata), len(patients), int((patients["censorship"] == 0).sum())) == (slides, cases, deaths)
    assert genomic_columns(cohort.genomics.columns) == list(cohort.genomics.columns)
    assert "train" not in cohort.metadata.columns


@pytest.mark.shared
@pytest.mark.parametrize(
    ("study", "sizes"),
    [("blca", [94, 334, 521, 468, 1496, 479]), ("luad", [89, 334, 534, 471, 1510, 482]), ("ucec", [3, 24, 21, 22, 65, 15])],
)
def test_real_signature_group_sizes_match_mcat(study, sizes):
    cohort = read_cohort_table(shared_path("data", "tcga", "tables", f"tcga_{study}_all_clean.csv.gz"))
    groups = signature_groups(cohort.genomics.columns, read_signatures(shared_path("data", "tcga", "signatures.csv")))
    assert [len(group) for group in groups.values()] == sizes
