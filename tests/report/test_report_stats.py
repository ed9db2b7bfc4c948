"""Survival statistics: scikit-survival equality of the vectorised bootstrap, IBS/AUC on hand-made data, tests."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)

from mmsurv.report.stats import (
    brier_contributions,
    corrected_ttest,
    evaluate,
    fold_mean_cindex,
    holm,
    pair_matrices,
    paired_bootstrap_p,
    percentile_interval,
    resample_counts,
    structured,
    survival_at,
)

EDGES = np.array([0.0, 10.0, 20.0, 30.0, 40.0])


def _cohort(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    time = np.round(rng.uniform(1, 39, n), 1)
    event = rng.random(n) < 0.6
    risk = -time + rng.normal(0, 8, n)
    survival = np.exp(-np.outer(np.exp(risk / 10), [0.2, 0.5, 0.9, 1.4]))
    return structured(event, time), risk, survival


def test_survival_at_takes_the_bin_containing_t():
    s = np.array([[0.9, 0.7, 0.4, 0.2]])
    assert survival_at(s, EDGES, [-1.0, 0.0, 9.99, 10.0, 25.0, 40.0, 99.0]).tolist() == [[0.9, 0.9, 0.9, 0.7, 0.4,
                                                                                          0.2, 0.2]]


def test_pair_statistics_equal_sksurv_on_the_sample_and_on_a_resample():
    y, risk, survival = _cohort(60)
    tau = float(np.quantile(y["time"], 0.8))
    pairs = pair_matrices(y, y, risk, survival, EDGES, tau)
    ones = np.ones((1, len(y)))
    assert pairs["cindex"].value(ones)[0] == pytest.approx(concordance_index_censored(y["event"], y["time"], risk)[0])
    assert pairs["uno"].value(ones)[0] == pytest.approx(concordance_index_ipcw(y, y, risk, tau=tau)[0])
    estimate = 1 - survival_at(survival, EDGES, [12.0])[:, 0]
    assert pairs["auc_12"].value(ones)[0] == pytest.approx(cumulative_dynamic_auc(y, y, estimate, [12.0])[0][0])
    counts = resample_counts(len(y), 3, seed=5)
    index = np.repeat(np.arange(len(y)), counts[0].astype(int))  # the resample as an explicit sample
    expected = concordance_index_censored(y["event"][index], y["time"][index], risk[index])[0]
    assert pairs["cindex"].value(counts)[0] == pytest.approx(expected)
    grid = np.unique(np.quantile(y["time"], np.linspace(0.1, 0.8, 15)))
    ibs = integrated_brier_score(y, y, survival_at(survival, EDGES, grid), grid)
    assert brier_contributions(y, y, survival, EDGES).mean() == pytest.approx(ibs)


def test_fold_mean_cindex_is_the_papers_statistic_on_the_sample_and_on_a_resample():
    """The paper tables' interval is of the mean over folds of each fold's Harrell's C."""
    y, risk, _ = _cohort(90, seed=3)
    folds = np.arange(len(y)) % 3
    per_fold = [concordance_index_censored(y["event"][folds == k], y["time"][folds == k], risk[folds == k])[0]
                for k in range(3)]
    assert fold_mean_cindex(y["event"], y["time"], risk, folds, np.ones((1, len(y))))[0] == pytest.approx(np.mean(per_fold))
    counts = resample_counts(len(y), 2, seed=1)
    index = np.repeat(np.arange(len(y)), counts[1].astype(int))
    expected = np.mean([concordance_index_censored(y["event"][index][folds[index] == k], y["time"][index][folds[index] == k],
                                                   risk[index][folds[index] == k])[0] for k in range(3)])
    assert fold_mean_cindex(y["event"], y["time"], risk, folds, counts)[1] == pytest.approx(expected)
    low, high = percentile_interval(fold_mean_cindex(y["event"], y["time"], risk, folds, resample_counts(len(y), 400, 0)))
    assert low < np.mean(per_fold) < high


def test_ibs_of_a_perfect_predictor_is_zero_and_of_a_constant_one_is_not():
    # deaths at bin starts (S is constant within a bin, so a perfect predictor dies with its bin); two censored
    time = np.array([10.0, 10.0, 20.0, 20.0, 30.0, 30.0, 39.0, 39.0])
    event = np.array([True] * 6 + [False] * 2)
    y = structured(event, time)
    bins = np.where(event, np.searchsorted(EDGES, time, side="right") - 1, 4)
    perfect = (np.arange(4)[None, :] < bins[:, None]).astype(float)  # S = 1 before the bin of death, 0 from it
    fine = evaluate(y, y, -time, perfect, EDGES, tau=30.0)
    constant = evaluate(y, y, np.zeros(8), np.full((8, 4), 0.5), EDGES, tau=30.0)
    assert fine.values["ibs"] == pytest.approx(0.0, abs=1e-12)
    assert constant.values["ibs"] == pytest.approx(0.25)
    assert fine.values["cindex"] == 1.0 and constant.values["cindex"] == 0.5


def test_auc_of_a_perfect_ranking_is_one_and_blank_beyond_follow_up():
    y, _, _ = _cohort(80, seed=3)
    survival = np.repeat(np.exp(-y["time"] / 100)[:, None] ** -1, 4, axis=1)  # higher for longer survivors
    survival = survival / survival.max()
    result = evaluate(y, y, -y["time"], survival, EDGES, tau=30.0)
    assert result.values["auc_12"] == pytest.approx(1.0)
    assert np.isnan(result.values["auc_60"]) and "beyond follow-up" in result.notes["auc_60"]


def test_interval_width_shrinks_with_n():
    widths = []
    for n in (40, 400):
        y, risk, survival = _cohort(n, seed=1)
        pairs = pair_matrices(y, y, risk, survival, EDGES, 30.0)
        low, high = percentile_interval(pairs["cindex"].value(resample_counts(n, 300, seed=0)))
        widths.append(high - low)
    assert widths[1] < 0.6 * widths[0]


def test_model_against_itself_gives_p_one_and_seed_reproduces():
    y, risk, survival = _cohort(50)
    pairs = pair_matrices(y, y, risk, survival, EDGES, 30.0)
    counts = resample_counts(len(y), 200, seed=11)
    values = pairs["cindex"].value(counts)
    assert paired_bootstrap_p(values - values) == 1.0
    assert corrected_ttest([0.0, 0.0, 0.0, 0.0, 0.0], 0.25)[1] == 1.0
    np.testing.assert_array_equal(resample_counts(50, 200, seed=11), counts)
    assert not np.array_equal(resample_counts(50, 200, seed=12), counts)
    better = pair_matrices(y, y, -y["time"], survival, EDGES, 30.0)["cindex"].value(counts)
    assert paired_bootstrap_p(better - values) < 0.05


def test_corrected_ttest_and_holm_by_hand():
    d = [0.02, 0.03, 0.01, 0.04, 0.00]
    t, p = corrected_ttest(d, 0.25)
    expected_t = 0.02 / np.sqrt((1 / 5 + 0.25) * np.var(d, ddof=1))
    assert t == pytest.approx(expected_t) and 0 < p < 1
    assert p > corrected_ttest(d, 0.0)[1]  # the correction widens the test
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])


def test_report_writes_statistics_tables_and_figures(built_report):
    import pandas as pd
    from report_fakes import COHORTS, MODELS

    _, out, paths, _ = built_report
    table = pd.read_csv(out / "statistics.csv", dtype={"note": str})
    table["note"] = table["note"].astype(object).fillna("")
    assert len(table) == len(COHORTS) * len(MODELS)
    assert ((table["cindex_low"] <= table["cindex_pooled"]) & (table["cindex_pooled"] <= table["cindex_high"])).all()
    assert table["ibs_pooled"].between(0, 1).all()
    for name in ("cindex", "uno", "ibs", "auc_12", "auc_36", "auc_60"):  # a blank always has its reason
        blank = table[f"{name}_pooled"].isna()
        assert table.loc[blank, "note"].str.contains(name).all()
    assert table["uno_pooled"].notna().all() and table["auc_36_pooled"].notna().all()
    comparisons = pd.read_csv(out / "comparisons.csv", keep_default_na=False, na_values=[""])
    # fake fold c-indices differ by exact constants: the corrected t-test is undefined and says why
    assert comparisons.loc[comparisons["p_nadeau_bengio"].isna(), "note"].str.contains("zero variance").all()
    assert len(comparisons) == len(COHORTS) * 3  # 3 pairs of 3 models per cohort
    assert (comparisons["p_bootstrap_holm"] >= comparisons["p_bootstrap"]).all()
    markdown = (out / "statistics.md").read_text()
    assert "95% CI" in markdown and "| BLCA | SNN |" in markdown
    assert "\\begin{tabular}" in (out / "comparisons.tex").read_text()
    for cohort in COHORTS:
        assert paths[f"significance_{cohort}"].stat().st_size > 1000
    for model in MODELS:
        assert paths[f"calibration_{model}"].is_file()


def test_statistics_reproducible_with_the_seed(fake_results):
    from report_fakes import COHORTS, MODELS

    from mmsurv.report.collect import collect_results
    from mmsurv.report.stats import compute_statistics

    results = collect_results(fake_results, COHORTS[:1], MODELS[:2])
    first = compute_statistics(results, n_boot=50, seed=3)
    again = compute_statistics(results, n_boot=50, seed=3)
    other = compute_statistics(results, n_boot=50, seed=4)
    pd_equal = first.table.equals(again.table) and first.comparisons.equals(again.comparisons)
    assert pd_equal
    assert not first.table["cindex_low"].equals(other.table["cindex_low"])
    assert (first.table["cindex_pooled"] == other.table["cindex_pooled"]).all()


def test_fold_metrics_use_the_training_censoring_and_cap_follow_up_beyond_it():
    y, risk, survival = _cohort(90, seed=4)
    train, test = y[:60], y[60:]
    tau = 25.0
    pairs = pair_matrices(train, test, risk[60:], survival[60:], EDGES, tau)
    ones = np.ones((1, 30))
    capped = test.copy()
    beyond = capped["time"] >= train["time"].max()
    capped["time"][beyond], capped["event"][beyond] = np.nextafter(train["time"].max(), 0), False
    assert pairs["uno"].value(ones)[0] == pytest.approx(concordance_index_ipcw(train, capped, risk[60:], tau=tau)[0])
    result = evaluate(train, test, risk[60:], survival[60:], EDGES, tau)
    assert result.values["uno"] == pytest.approx(pairs["uno"].value(ones)[0])
    estimate = 1 - survival_at(survival[60:], EDGES, [12.0])[:, 0]
    assert result.values["auc_12"] == pytest.approx(cumulative_dynamic_auc(train, capped, estimate, [12.0])[0][0])
    no_events = structured(np.zeros(30, bool), test["time"])
    empty = evaluate(train, no_events, risk[60:], survival[60:], EDGES, tau)
    assert np.isnan(empty.values["cindex"]) and empty.notes["cindex"] == "no event"


def test_one_fold_takes_the_censoring_distribution_from_its_own_patients(fake_results, tmp_path):
    """``folds: 1`` (the SLURM test, a quick try) has no other fold to estimate censoring from."""
    import shutil

    from report_fakes import COHORTS, MODELS

    from mmsurv.report.collect import collect_results
    from mmsurv.report.stats import compute_statistics

    cohort, model = COHORTS[0], MODELS[0]
    source = fake_results / cohort / model / "fold0"
    shutil.copytree(source, tmp_path / cohort / model / "fold0")
    stats = compute_statistics(collect_results(tmp_path, [cohort], [model], folds=1), n_boot=20, seed=0)
    row = stats.table.iloc[0]
    assert np.isfinite(row["cindex_pooled"]) and np.isfinite(row["cindex_fold_mean"])
    assert row["uno_fold_mean"] == pytest.approx(row["uno_pooled"])
    assert "one fold only" in row["note"]


def censored_copy(fake_results, root, cohort: str, model: str) -> None:
    """Fold 0 of a fake cohort × model copied under ``root`` with every patient censored."""
    import shutil

    import pandas as pd

    fold_dir = root / cohort / model / "fold0"
    shutil.copytree(fake_results / cohort / model / "fold0", fold_dir)
    for name in ("predictions.tsv", "predictions_best.tsv"):
        frame = pd.read_csv(fold_dir / name, sep="\t")
        frame["event"] = 0
        frame.to_csv(fold_dir / name, sep="\t", index=False)


def test_a_single_fold_without_events_gives_nan_metrics_not_a_crash(fake_results, tmp_path):
    """A 6-patient run with ``folds: 1`` can have only censored patients in its fold (the SLURM test did)."""

    from report_fakes import COHORTS, MODELS

    from mmsurv.report.collect import collect_results
    from mmsurv.report.stats import compute_statistics

    cohort, model = COHORTS[0], MODELS[0]
    censored_copy(fake_results, tmp_path, cohort, model)
    stats = compute_statistics(collect_results(tmp_path, [cohort], [model], folds=1), n_boot=20, seed=0)
    row = stats.table.iloc[0]
    assert row["events"] == 0
    assert np.isnan(row["cindex_pooled"]) and np.isnan(row["uno_pooled"]) and np.isnan(row["cindex_low"])
    assert "no event" in row["note"]


def test_a_model_comparison_on_a_fold_without_events_is_nan_with_a_note(fake_results, tmp_path):
    """Two models on a cohort whose only fold has no event (a tiny demo): no c-index difference, no crash."""

    from report_fakes import COHORTS, MODELS

    from mmsurv.report.collect import collect_results
    from mmsurv.report.stats import compute_statistics

    cohort, models = COHORTS[0], MODELS[:2]
    for model in models:
        censored_copy(fake_results, tmp_path, cohort, model)
    stats = compute_statistics(collect_results(tmp_path, [cohort], models, folds=1), n_boot=20, seed=0)
    row = stats.comparisons.iloc[0]
    assert np.isnan(row["delta_cindex"]) and "no comparable pair" in row["note"]
