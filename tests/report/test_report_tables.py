"""c-index tables: values equal the per-fold metrics they summarise, marks, captions, errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from report_fakes import COHORTS, FOLDS, MODELS, fake_cindex

from mmsurv.report.collect import ResultsError, collect_results
from mmsurv.report.tables import cindex_markdown, rank_marks, summarise_cindex


def _md_rows(text: str) -> dict[str, list[str]]:
    """Model label → cells of a Markdown table."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Model"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].split()[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("variant", ["last", "best"])
def test_cindex_tables_equal_per_fold_metrics(built_report, variant):
    results_dir, out, paths, _ = built_report
    per_fold = pd.read_csv(paths[f"cindex_{variant}_csv"])
    assert list(per_fold.columns) == ["cohort", "model", "fold", "variant", "cindex"]
    assert set(per_fold["variant"]) == {variant}
    assert len(per_fold) == len(COHORTS) * len(MODELS) * FOLDS
    rows = _md_rows(paths[f"cindex_{variant}_md"].read_text())
    for cohort_index, cohort in enumerate(COHORTS):
        for model in MODELS:
            recorded = [json.loads((results_dir / cohort / model / f"fold{k}" / "metrics.json").read_text())
                        [f"cindex_{variant}"] for k in range(FOLDS)]
            values = per_fold[(per_fold["cohort"] == cohort) & (per_fold["model"] == model)]
            assert values.sort_values("fold")["cindex"].tolist() == pytest.approx(recorded)
            cell = re.sub(r"[*<>u/]", "", rows[model.upper()][cohort_index])
            interval = re.search(r" \[(0\.\d{3}), (0\.\d{3})\]$", cell)
            assert (interval is not None) == (variant == "last")  # the statistics are of the last epoch
            cell = cell[:interval.start()] if interval else cell
            assert cell == f"{np.mean(recorded):.3f} ± {np.std(recorded):.3f}"  # MCAT: np.std, ddof=0
    for model in MODELS:
        overall = np.mean([np.mean([fake_cindex(c, model, k, variant) for k in range(FOLDS)]) for c in COHORTS])
        assert re.sub(r"[*<>u/]", "", rows[model.upper()][-1]) == f"{overall:.3f}"


def test_best_bold_second_underlined(built_report):
    _, _, paths, _ = built_report
    rows = _md_rows(paths["cindex_last_md"].read_text())
    for cells in (rows["MCAT"], rows["ABMIL"], rows["SNN"]):
        assert len(cells) == len(COHORTS) + 1
    assert all(cell.startswith("**") and cell.endswith("**") for cell in rows["MCAT"])
    assert all(cell.startswith("<u>") and cell.endswith("</u>") for cell in rows["ABMIL"])
    assert not any("**" in cell or "<u>" in cell for cell in rows["SNN"])
    tex = paths["cindex_last_tex"].read_text()
    mcat_line = next(line for line in tex.splitlines() if line.startswith("MCAT"))
    abmil_line = next(line for line in tex.splitlines() if line.startswith("ABMIL"))
    assert mcat_line.count(r"\textbf{") == len(COHORTS) + 1 and r"\underline" not in mcat_line
    assert abmil_line.count(r"\underline{") == len(COHORTS) + 1
    assert r"\caption{" in tex and r"\toprule" in tex


def test_captions_name_the_variant(built_report):
    _, _, paths, _ = built_report
    last, best = paths["cindex_last_md"].read_text(), paths["cindex_best_md"].read_text()
    assert last.splitlines()[0].startswith("**Table: c-index (last epoch).**")
    assert best.splitlines()[0].startswith("**Table: c-index (best epoch).**")
    assert "population std, ddof=0" in last
    assert "optimistic" in best and "optimistic" not in last  # fake folds say best_selected_on: val


def test_rank_marks_use_displayed_values_and_ties():
    assert rank_marks({"a": 0.6, "b": 0.7, "c": 0.65}) == {"a": None, "b": "best", "c": "second"}
    marks = rank_marks({"a": 0.70004, "b": 0.69996, "c": 0.5, "d": float("nan")})
    assert marks == {"a": "best", "b": "best", "c": "second", "d": None}


def test_sample_std_option(fake_results):
    results = collect_results(fake_results, COHORTS, MODELS, folds=FOLDS)
    summary = summarise_cindex(results, "last", ddof=1)
    values = [fake_cindex("blca", "snn", k, "last") for k in range(FOLDS)]
    assert summary.std.loc["snn", "blca"] == pytest.approx(np.std(values, ddof=1))
    assert "sample std, ddof=1" in cindex_markdown(summary)


def test_discovery_orders_models_by_modality(fake_results):
    results = collect_results(fake_results)
    assert results.cohorts == tuple(COHORTS)
    assert results.models == ("snn", "abmil", "mcat")
    assert len(results.folds) == len(COHORTS) * len(MODELS) * FOLDS


def test_missing_fold_or_model_is_named(fake_results):
    with pytest.raises(ResultsError, match=r"cohort blca, model snn, fold 3: missing .*fold3/metrics.json"):
        collect_results(fake_results, ["blca"], ["snn"], folds=4)
    with pytest.raises(ResultsError, match=r"cohort demo, model motcat: no fold"):
        collect_results(fake_results, ["demo"], ["motcat"])
    with pytest.raises(ResultsError, match=r"cohort luad: no folder"):
        collect_results(fake_results, ["luad"], ["snn"])


def test_models_table_names_each_rows_paper(tmp_path):
    from mmsurv.report.collect import ResultSet
    from mmsurv.report.tables import write_models_table

    class Fold:
        def __init__(self, model, metrics):
            self.model, self.metrics, self.cohort, self.fold = model, metrics, "demo", 0

    folds = (Fold("snn", {"display_name": "SNN", "base_model": "snn", "label": "genomic", "inputs": ["omic"],
                          "citation": "Klambauer et al., NeurIPS 2017"}),
             Fold("snn_selu", {"display_name": "SNN [snn_selu]", "base_model": "snn", "label": "genomic",
                               "inputs": ["omic"], "citation": "Klambauer et al., NeurIPS 2017"}))
    results = ResultSet(results_dir=tmp_path, cohorts=("demo",), models=("snn", "snn_selu"), folds=folds)
    paths = write_models_table(results, tmp_path)
    text = paths["models_md"].read_text()
    assert "| SNN | snn | genomic | omic | Klambauer et al., NeurIPS 2017 |" in text
    assert "snn_selu (variant of snn)" in text
