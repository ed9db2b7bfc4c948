"""Kaplan–Meier stratification: median rules, log-rank p equal to scikit-survival's, curves, at-risk counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_fakes import COHORTS, FOLDS, MODELS
from sksurv.compare import compare_survival
from sksurv.nonparametric import kaplan_meier_estimator

from mmsurv.report.collect import collect_results
from mmsurv.report.km import km_curve, numbers_at_risk, split_by_median, stratify


@pytest.fixture(scope="module")
def results(fake_results):
    return collect_results(fake_results, COHORTS, MODELS, folds=FOLDS)


def _out_of_fold(results_dir, cohort, model) -> pd.DataFrame:
    frames = [pd.read_csv(results_dir / cohort / model / f"fold{k}" / "predictions.tsv", sep="\t").assign(fold=k)
              for k in range(FOLDS)]
    return pd.concat(frames, ignore_index=True)


def _survival(frame: pd.DataFrame) -> np.ndarray:
    y = np.empty(len(frame), dtype=[("event", "?"), ("time", "<f8")])
    y["event"], y["time"] = frame["event"].astype(bool), frame["time"]
    return y


@pytest.mark.parametrize("median_split", ["pooled", "fold_train"])
def test_logrank_p_equals_compare_survival(results, fake_results, median_split):
    strat = stratify(results, "blca", "mcat", median_split=median_split)
    frame = _out_of_fold(fake_results, "blca", "mcat")
    if median_split == "pooled":
        high = frame["risk"] >= np.median(frame["risk"])
    else:  # per-fold median of the validation risks (no training risks saved)
        high = frame["risk"] >= frame.groupby("fold")["risk"].transform("median")
    _, expected_p = compare_survival(_survival(frame), np.where(high, "high", "low"))
    assert strat.pvalue == pytest.approx(expected_p, rel=1e-12)
    assert (strat.frame["group"] == "high").sum() == high.sum()
    assert len(strat.frame) == FOLDS * 24


def test_split_labels_state_the_rule(results):
    assert "pooled median" in stratify(results, "demo", "snn", median_split="pooled").split_label
    per_fold = stratify(results, "demo", "snn", median_split="fold_train")
    assert "per-fold median of validation risks" in per_fold.split_label
    assert set(per_fold.thresholds) == {"0", "1", "2"}


def test_fold_train_uses_training_risks_when_saved():
    frame = pd.DataFrame({"fold": [0, 0, 0, 1, 1, 1], "risk": [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]})
    train = {0: np.array([0.0, 2.5, 5.0]), 1: np.array([100.0, 200.0])}
    groups, thresholds, rule = split_by_median(frame, "fold_train", train)
    assert rule == "train" and thresholds == {"0": 2.5, "1": 150.0}
    assert groups.tolist() == ["low", "low", "high", "low", "low", "low"]
    groups, thresholds, rule = split_by_median(frame, "fold_train", {0: train[0]})  # incomplete → per fold
    assert rule == "per_fold" and thresholds == {"0": 2.0, "1": 20.0}
    assert groups.tolist() == ["low", "high", "high", "low", "high", "high"]
    with pytest.raises(ValueError, match="median_split"):
        split_by_median(frame, "mean")


def test_km_curve_and_numbers_at_risk():
    time = np.array([2.0, 3.0, 3.0, 5.0, 8.0, 9.0])
    event = np.array([1, 0, 1, 1, 0, 1])
    curve = km_curve(event, time)
    t, s, band = kaplan_meier_estimator(event.astype(bool), time, conf_type="log-log")
    assert curve.time[0] == 0 and curve.survival[0] == 1
    np.testing.assert_allclose(curve.survival[1:], s)
    np.testing.assert_allclose(curve.time[1:], t)
    assert np.all(curve.lower <= curve.survival + 1e-12) and np.all(curve.upper >= curve.survival - 1e-12)
    assert numbers_at_risk(time, [0, 3, 6, 10]) == [6, 5, 2, 0]
