"""Kaplan–Meier risk stratification of out-of-fold predictions, with the log-rank test.

For the report builder and its figures (and for readers who want the numbers behind a KM plot).

The validation predictions of all folds of a cohort × model are concatenated (each patient is in
exactly one validation fold) and split into a low- and a high-risk group at a median of the risk
score (``risk = −Σ_k S_k``, higher = worse). As in MCAT's evaluation (``hazard2grade``), a patient
is high risk when ``risk >= median``. Two medians are offered:

* ``"fold_train"``: each fold's own threshold. The ideal threshold is the median of the fold's
  TRAINING-patient risks (no validation information leaks into the split); the training stage
  saves only validation predictions, so this is used only when every fold folder also holds a
  ``predictions_train.tsv``. Otherwise the threshold is the median of the fold's VALIDATION risks
  (the "per-fold median": it removes between-fold shifts of the risk scale, which concatenating
  folds would otherwise mix, at the price of using the validation risks' own median). The label
  returned (and printed in the figure subtitle) says which one was used.
* ``"pooled"``: one threshold, the median of all out-of-fold risks (MCAT's
  ``getPValue_Binary``: ``np.percentile(risk, 50)`` over the concatenated folds).

The log-rank p-value is :func:`sksurv.compare.compare_survival` on (event, time) and the group
labels; curves are :func:`sksurv.nonparametric.kaplan_meier_estimator` with 95 % log-log
confidence bands. Times are in months (the cohort table's ``survival_months``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sksurv.compare import compare_survival
from sksurv.nonparametric import kaplan_meier_estimator

from mmsurv.report.collect import ResultsError, ResultSet
from mmsurv.report.settings import MEDIAN_SPLITS

TRAIN_PREDICTIONS = "predictions_train.tsv"
GROUPS = ("low", "high")
SPLIT_LABELS = {
    "train": "high risk ≥ median of each fold's training risks",
    "per_fold": "high risk ≥ per-fold median of validation risks (training risks not saved)",
    "pooled": "high risk ≥ pooled median of all out-of-fold risks",
}


@dataclass(frozen=True)
class KMCurve:
    """A Kaplan–Meier curve starting at (0, 1): step times, survival and the 95 % band."""

    time: np.ndarray
    survival: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True)
class RiskStratification:
    """Out-of-fold patients split into low/high risk, the thresholds used and the log-rank test."""

    cohort: str
    model: str
    variant: str
    median_split: str
    split_label: str  # human-readable rule, shown in figure subtitles
    frame: pd.DataFrame  # case_id, fold, risk, time, event, group
    thresholds: dict[str, float]  # fold k (as str) or "pooled" → threshold
    chisq: float
    pvalue: float

    def group(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["group"] == name]


def split_by_median(frame: pd.DataFrame, median_split: str,
                    train_risks: dict[int, np.ndarray] | None = None) -> tuple[pd.Series, dict[str, float], str]:
    """Group labels (``low``/``high``) of the rows of ``frame`` (columns fold, risk), thresholds and rule key.

    ``train_risks`` (fold → training-patient risks) is used by ``"fold_train"`` when it covers
    every fold; otherwise each fold's validation median is used.
    """
    if median_split not in MEDIAN_SPLITS:
        raise ValueError(f"median_split must be one of {', '.join(MEDIAN_SPLITS)}, got {median_split!r}")
    risk = frame["risk"].to_numpy(dtype="float64")
    if median_split == "pooled":
        threshold = float(np.median(risk))
        return _labels(risk >= threshold, frame.index), {"pooled": threshold}, "pooled"
    folds = sorted(frame["fold"].unique().tolist())
    use_train = bool(train_risks) and all(k in train_risks and len(train_risks[k]) for k in folds)
    thresholds = {}
    high = np.zeros(len(frame), dtype=bool)
    fold_values = frame["fold"].to_numpy()
    for k in folds:
        in_fold = fold_values == k
        reference = train_risks[k] if use_train else risk[in_fold]
        thresholds[str(k)] = float(np.median(reference))
        high[in_fold] = risk[in_fold] >= thresholds[str(k)]
    return _labels(high, frame.index), thresholds, "train" if use_train else "per_fold"


def _labels(high: np.ndarray, index: pd.Index) -> pd.Series:
    return pd.Series(np.where(high, "high", "low"), index=index, name="group")


def survival_array(event, time) -> np.ndarray:
    """The structured (event: bool, time: float) array scikit-survival expects."""
    y = np.empty(len(time), dtype=[("event", "?"), ("time", "<f8")])
    y["event"] = np.asarray(event).astype(bool)
    y["time"] = np.asarray(time, dtype="float64")
    return y


def logrank(event, time, groups) -> tuple[float, float]:
    """(chi², p) of the log-rank test between ``groups``; NaNs when fewer than two groups or no event."""
    groups = np.asarray(groups)
    event = np.asarray(event).astype(bool)
    if len(np.unique(groups)) < 2 or not event.any():
        return float("nan"), float("nan")
    chisq, pvalue = compare_survival(survival_array(event, time), groups)
    return float(chisq), float(pvalue)


def km_curve(event, time) -> KMCurve:
    """Kaplan–Meier estimate with 95 % log-log band, prefixed with (0, 1) so the step starts at 1."""
    event = np.asarray(event).astype(bool)
    time = np.asarray(time, dtype="float64")
    if time.size == 0:
        empty = np.array([0.0])
        return KMCurve(empty, np.array([1.0]), np.array([1.0]), np.array([1.0]))
    if event.any():
        t, s, band = kaplan_meier_estimator(event, time, conf_type="log-log")
        lower, upper = np.nan_to_num(band[0], nan=0.0), np.nan_to_num(band[1], nan=1.0)
    else:  # all censored: S = 1 throughout, no band
        t = np.unique(time)
        s = lower = upper = np.ones_like(t)
    prefix = t.size == 0 or t[0] > 0
    if prefix:
        t, s, lower, upper = (np.concatenate([[v], a]) for v, a in ((0.0, t), (1.0, s), (1.0, lower), (1.0, upper)))
    return KMCurve(time=t, survival=s, lower=lower, upper=upper)


def numbers_at_risk(time, ticks) -> list[int]:
    """Patients still under observation (time ≥ tick) at each tick."""
    time = np.asarray(time, dtype="float64")
    return [int((time >= tick).sum()) for tick in ticks]


def stratify(results: ResultSet, cohort: str, model: str, *, variant: str = "last",
             median_split: str = "fold_train") -> RiskStratification:
    """Out-of-fold risk groups of one cohort × model and their log-rank test."""
    frame = results.out_of_fold(cohort, model, variant)[["case_id", "fold", "risk", "time", "event"]].copy()
    frame = frame.dropna(subset=["risk", "time", "event"]).reset_index(drop=True)
    if frame.empty:
        raise ResultsError(f"cohort {cohort}, model {model}: no out-of-fold predictions with risk, time and event")
    train_risks = _train_risks(results, cohort, model) if median_split == "fold_train" else None
    frame["group"], thresholds, rule = split_by_median(frame, median_split, train_risks)
    chisq, pvalue = logrank(frame["event"], frame["time"], frame["group"])
    return RiskStratification(cohort=cohort, model=model, variant=variant, median_split=median_split,
                              split_label=SPLIT_LABELS[rule], frame=frame, thresholds=thresholds, chisq=chisq,
                              pvalue=pvalue)


def _train_risks(results: ResultSet, cohort: str, model: str) -> dict[int, np.ndarray]:
    """Training-patient risks per fold, from ``predictions_train.tsv`` where the training stage saved it."""
    risks = {}
    for fold in results.get(cohort, model):
        path = fold.path / TRAIN_PREDICTIONS
        if path.is_file():
            risks[fold.fold] = pd.read_csv(path, sep="\t", usecols=["risk"])["risk"].dropna().to_numpy(dtype="float64")
    return risks


def format_pvalue(pvalue: float) -> str:
    """``p = 0.012``, ``p = 3.4e-05``, ``p < 1e-16`` or ``p = n/a``."""
    if pvalue is None or not np.isfinite(pvalue):
        return "p = n/a"
    if pvalue < 1e-16:
        return "p < 1e-16"
    return f"p = {pvalue:.3f}" if pvalue >= 0.001 else f"p = {pvalue:.1e}"


def stratification_frame(strata: list[RiskStratification]) -> pd.DataFrame:
    """One row per cohort × model: group sizes, events, thresholds rule, chi² and p (``km_logrank.csv``)."""
    rows = []
    for s in strata:
        low, high = s.group("low"), s.group("high")
        rows.append({"cohort": s.cohort, "model": s.model, "variant": s.variant, "median_split": s.median_split,
                     "rule": s.split_label, "n_low": len(low), "n_high": len(high),
                     "events_low": int(low["event"].sum()), "events_high": int(high["event"].sum()),
                     "chisq": s.chisq, "pvalue": s.pvalue})
    return pd.DataFrame(rows)
