"""Paper tables: the published values beside ours, matched by model and cohort; blanks where not run."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mmsurv.report.papers import compare_table, paper_table_files, shipped_papers
from mmsurv.report.published import published


def _survmamba_table1() -> pd.DataFrame:
    frame = published("survmamba")
    return frame[frame["table"] == "Table 1"]


def test_rows_take_our_mean_interval_and_say_whether_the_published_value_is_inside():
    table = _survmamba_table1()
    ours = pd.DataFrame([{"cohort": "blca", "model": "snn", "mean": 0.62, "std": 0.03},
                         {"cohort": "blca", "model": "mcat", "mean": 0.70, "std": 0.02}])
    intervals = {("blca", "snn"): (0.58, 0.66), ("blca", "mcat"): (0.68, 0.72)}
    frame = compare_table(table, ours, intervals, pd.DataFrame()).set_index(["model", "cohort"])
    snn = frame.loc[("snn", "blca")]
    assert snn["published"] == pytest.approx(0.610) and snn["ours"] == pytest.approx(0.62)
    assert snn["difference"] == pytest.approx(0.01) and snn["inside_ci"] is True  # 0.610 in [0.58, 0.66]
    assert frame.loc[("mcat", "blca"), "inside_ci"] is False  # 0.669 below 0.68
    assert math.isnan(frame.loc[("snn", "brca"), "ours"])  # not run: blank, never filled in
    assert math.isnan(frame.loc[("snn", "overall"), "ours"])  # overall needs every cohort of the paper
    assert frame.loc[("snn", "brca"), "inside_ci"] is None


def test_overall_is_the_mean_over_the_papers_cohorts_when_all_were_run():
    table = _survmamba_table1()
    cohorts = ["brca", "blca", "coadread", "ucec", "luad"]
    ours = pd.DataFrame([{"cohort": c, "model": "snn", "mean": 0.6 + 0.01 * i, "std": 0.01} for i, c in enumerate(cohorts)])
    frame = compare_table(table, ours, {}, pd.DataFrame()).set_index(["model", "cohort"])
    assert frame.loc[("snn", "overall"), "ours"] == pytest.approx(0.62)


def test_efficiency_rows_take_our_counts():
    table = published("survmamba")
    table = table[table["table"] == "Table 2"]
    efficiency = pd.DataFrame([{"model": "survmamba", "n_params": 400_000, "flops_reference": 2.0e9}])
    frame = compare_table(table, pd.DataFrame(columns=["cohort", "model", "mean", "std"]), {}, efficiency)
    params = frame[(frame["model"] == "survmamba") & (frame["metric"] == "params")].iloc[0]
    assert params["ours"] == 400_000 and params["difference"] == pytest.approx(400_000 - 398_850)


def test_cost_and_cohort_rows_take_our_memory_time_cases_and_genomic_width():
    table = published("cancermoe")
    efficiency = pd.DataFrame([
        {"cohort": "blca", "model": "cancermoe", "n_params": 1e5, "flops_reference": 1e8, "peak_rss_mb": 2048.0,
         "peak_cuda_mb": float("nan"), "seconds_total_sum": 7200.0, "val_patients": 373, "genomic_dim": 3062},
        {"cohort": "luad", "model": "cancermoe", "n_params": 1e5, "flops_reference": 1e8, "peak_rss_mb": 4096.0,
         "peak_cuda_mb": 1024.0, "seconds_total_sum": 3600.0, "val_patients": 453, "genomic_dim": 3000}])
    empty = pd.DataFrame(columns=["cohort", "model", "mean", "std"])
    table3 = compare_table(table[table["table"] == "Table 3"], empty, {}, efficiency).set_index(["metric", "cohort"])
    assert table3.loc[("cases", "blca"), "ours"] == 373 and table3.loc[("cases", "blca"), "published"] == 437
    assert table3.loc[("genomic_dim", "luad"), "ours"] == 3000
    assert math.isnan(table3.loc[("cases", "brca"), "ours"])  # not run: blank
    table2 = compare_table(table[table["table"] == "Table 2"], empty, {}, efficiency)
    ours = table2[table2["model"] == "cancermoe"].set_index("metric")["ours"]
    assert ours["vram_gb"] == pytest.approx((2.0 + 1.0) / 2)  # RSS on the CPU cohort, the GPU's peak on the other
    assert ours["train_hours"] == pytest.approx(1.5)  # mean over the cohorts of the folds' summed hours


def test_report_writes_each_table_of_the_chosen_papers(fake_results, tmp_path):
    from report_fakes import COHORTS, FOLDS, MODELS

    from mmsurv.report.build import build_report

    assert shipped_papers() == ["cancermoe", "survmamba"]
    paths = build_report(fake_results, COHORTS, MODELS, tmp_path / "report", folds=FOLDS, reference_bag_size=512,
                         bootstrap=20, papers=["survmamba"])
    written = sorted(p.relative_to(tmp_path / "report").as_posix() for k, p in paths.items() if k.startswith("paper_"))
    assert written == sorted(f"papers/survmamba/{name}.{ext}" for name in paper_table_files(["survmamba"])["survmamba"]
                             for ext in ("csv", "md", "tex"))
    table1 = pd.read_csv(tmp_path / "report/papers/survmamba/table1.csv")
    blca_snn = table1[(table1["model"] == "snn") & (table1["cohort"] == "blca")].iloc[0]
    assert 0 < blca_snn["ours"] < 1 and 0 < blca_snn["ci_low"] < blca_snn["ci_high"] < 1  # (the fakes' metrics
    # and predictions are made up separately: the interval need not hold the mean here)
    assert "SNN" in (tmp_path / "report/papers/survmamba/table1.md").read_text()
    with pytest.raises(ValueError, match="no tables of nosuch"):
        paper_table_files(["nosuch"])


def test_papers_without_published_tables_get_our_comparison_and_ablation_tables(tmp_path):
    import numpy as np

    from mmsurv.report.papers import ours_table_models, write_paper_tables
    from mmsurv.report.tables import CindexSummary

    models = ["mcat", "mmm_rounds_0", "mmm", "mmm_wo_dam", "snn_selu", "motcat"]
    base = {"mmm_rounds_0": "mmm", "mmm_wo_dam": "mmm", "snn_selu": "snn"}
    assert ours_table_models("mmm", "comparison", models, base) == ["mmm", "mcat", "motcat"]
    assert ours_table_models("mmm", "ablation", models, base) == ["mmm", "mmm_rounds_0", "mmm_wo_dam"]
    assert paper_table_files(["mmm", "survmamba"])["mmm"] == ["comparison", "ablation"]

    cohorts = ["blca", "luad"]
    mean = pd.DataFrame([[0.6 + 0.01 * i, 0.5 + 0.01 * i, 0.55 + 0.01 * i] for i in range(len(models))],
                        index=models, columns=[*cohorts, "overall"])
    summary = CindexSummary(variant="last", cohorts=tuple(cohorts), models=tuple(models), mean=mean,
                            std=mean[cohorts] * 0 + 0.02, n_folds=pd.DataFrame(5, index=models, columns=cohorts),
                            ddof=0, selected_on=(), modalities={}, intervals={("blca", "mmm"): (0.55, 0.68)}, n_boot=50)
    paths = write_paper_tables(["mmm"], tmp_path, pd.DataFrame(), {}, pd.DataFrame(), summary=summary,
                               base_models=base)
    assert sorted(p.name for p in paths.values()) == sorted(f"{t}.{e}" for t in ("ablation", "comparison")
                                                            for e in ("csv", "md", "tex"))
    ablation = pd.read_csv(tmp_path / "papers/mmm/ablation.csv")
    assert ablation["model"].drop_duplicates().tolist() == ["mmm", "mmm_rounds_0", "mmm_wo_dam"]
    row = ablation[(ablation["model"] == "mmm") & (ablation["cohort"] == "blca")].iloc[0]
    assert row["mean"] == pytest.approx(0.62) and row["ci_low"] == pytest.approx(0.55)
    assert np.isnan(ablation[(ablation["model"] == "mmm_wo_dam") & (ablation["cohort"] == "blca")]["ci_low"].iloc[0])
    text = (tmp_path / "papers/mmm/comparison.md").read_text()
    assert "prints no results table" in text and "SNN" not in text and "0.620 ± 0.020 [0.550, 0.680]" in text
    assert "tab:mmm-comparison" in (tmp_path / "papers/mmm/comparison.tex").read_text()
