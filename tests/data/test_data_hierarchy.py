"""Pathway tooling: coverage of gene sets in a cohort table, SurvMamba's process hierarchy, and
``mmsurv pathways`` that runs both."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd

from mmsurv.data.hierarchy import build_hierarchy
from mmsurv.data.pathways import pathway_coverage, read_gene_sets
from mmsurv.models.survmamba import DEFAULT_HIERARCHY, read_hierarchy
from mmsurv.resources import default_pathways

MMSURV = Path(sys.executable).parent / "mmsurv"


def test_pathway_coverage_reports_present_genes():
    columns = ["case_id", "A_rnaseq", "B_rnaseq", "C_cnv", "D_rnaseq"]
    frame = pathway_coverage(columns, {"p1": ["A", "B", "X"], "p2": ["C"], "p3": ["D"]})
    rows = frame.set_index("pathway")
    assert rows.loc["p1", "n_present"] == 2 and rows.loc["p1", "n_genes"] == 3
    assert rows.loc["p2", "n_present"] == 0  # only _rnaseq by default, as the grouping
    assert rows.loc["p3", "coverage"] == 1.0
    assert list(frame.pathway) == ["p3", "p1", "p2"]


def test_shipped_hierarchy_is_the_deterministic_overlap_grouping():
    rows = build_hierarchy(read_gene_sets(default_pathways()), 42)
    with open(DEFAULT_HIERARCHY, newline="") as handle:
        shipped = [(row["process"], row["function"]) for row in csv.DictReader(handle)]
    assert rows == shipped
    mapping = read_hierarchy(DEFAULT_HIERARCHY)
    assert len(mapping) == 331 and len(set(mapping.values())) == 42


def test_the_command_line_writes_a_hierarchy_the_model_reads_and_reports_coverage(tmp_path):
    sets = tmp_path / "sets.csv"
    pd.DataFrame({"p1": ["A", "B", "C"], "p2": ["B", "C", None], "p3": ["X", "Y", None],
                  "p4": ["Y", "Z", None]}).to_csv(sets, index=False)
    out = tmp_path / "hierarchy.csv"
    result = subprocess.run([str(MMSURV), "pathways", "hierarchy", str(sets), str(out), "--processes", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    mapping = read_hierarchy(out)
    assert mapping["p1"] == mapping["p2"] and mapping["p3"] == mapping["p4"] and mapping["p1"] != mapping["p3"]
    table = tmp_path / "table.csv"
    pd.DataFrame({"case_id": ["a", "b"], "slide_id": ["s1", "s2"], "survival_months": [1.0, 2.0],
                  "censorship": [0, 1], "A_rnaseq": [0.1, 0.2], "B_rnaseq": [0.3, 0.4]}).to_csv(table, index=False)
    result = subprocess.run([str(MMSURV), "pathways", "coverage", "--table", str(table), "--pathways", str(sets),
                             "--out", str(tmp_path / "coverage.tsv")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    coverage = pd.read_csv(tmp_path / "coverage.tsv", sep="\t").set_index("pathway")
    assert coverage.loc["p1", "n_present"] == 2 and coverage.loc["p3", "n_present"] == 0
