"""Survival statistics beyond Harrell's c-index: IBS, time-dependent AUC, Uno's C, bootstrap intervals, paired tests.

For the report builder (issue 27). Every metric of a cohort × model is computed from the fold
outputs the training stage already writes (``predictions.tsv``: risk, S_1..S_K, time, event;
``bin_edges.json``); nothing is retrained. scikit-survival computes every point estimate
(``concordance_index_censored``, ``concordance_index_ipcw``, ``brier_score`` /
``integrated_brier_score``, ``cumulative_dynamic_auc``, ``kaplan_meier_estimator``).

Choices (each one stated in the table notes or the HTML captions):

* **Survival function on a time grid.** The models predict discrete hazards on K bins; S_k is the
  probability of surviving past bin k. S(t) is taken constant within a bin and equal to the S of the
  bin containing t (bins left-closed, times before the first edge in bin 1, after the last in bin K):
  :func:`survival_at`. As S_k is survival to the END of bin k, this is the lower value within the
  bin (S at the bin's start, S_{k-1}, would be the upper one); no interpolation inside a bin, since
  the model says nothing about when within its bin an event falls.
* **Censoring distribution.** Per fold, the Kaplan–Meier estimate of the censoring distribution is
  fitted on the fold's training patients. The training patients of fold k are the other folds'
  validation patients (the K-fold splits partition the cohort; a fold whose ``n_train`` in
  metrics.json differs from that count gets a note). Pooled out-of-fold metrics use the whole
  cohort (every patient is in the pooled set).
* **Follow-up cap.** Validation patients followed beyond the last training time are censored just
  below it for the IPCW metrics (:func:`cap_follow_up`; metrics are evaluated below the cap only).
* **Time grids.** The IBS grid is 15 quantiles (10 %–80 %) of the observed times of the evaluated
  patients (inside their follow-up, as ``brier_score`` requires); Uno's C is truncated at
  ``tau`` = the 80th percentile of the cohort's observed times; the AUC is reported at 12, 36 and
  60 months where the validation follow-up covers the horizon (the estimate is 1 − S(horizon)).
* **Bootstrap.** Patients of the pooled out-of-fold predictions are resampled with replacement
  (``n_boot`` resamples, seeded; the same resamples for every model of a cohort, which makes the
  model comparisons paired). Each resample's metric is computed as a weighted pair sum with the
  resample counts as weights (:func:`pair_matrices`), so all resamples are a few matrix products;
  the censoring weights are those of the full pooled set (not refitted per resample). Intervals are
  the 2.5/97.5 percentiles.
* **Comparisons.** Paired bootstrap of the Harrell c-index difference (two-sided p = 2·min(P(Δ*≤0),
  P(Δ*≥0)), at most 1), the corrected resampled t-test over folds (Nadeau & Bengio 2003: variance
  inflated by 1/K + n_val/n_train), Holm correction over the pairs of a cohort.
* A metric that cannot be computed is NaN in the frames and blank in the tables, with its reason in
  the ``note`` column.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import CensoringDistributionEstimator, kaplan_meier_estimator

from mmsurv.report.collect import ResultSet
from mmsurv.report.settings import DEFAULT_N_BOOT, DEFAULT_SEED
from mmsurv.train.metrics import TIED_TOL, comparable_pairs, concordance, pair_concordance

AUC_HORIZONS = (12.0, 36.0, 60.0)  # months
TAU_QUANTILE = 0.8
GRID_QUANTILES = np.linspace(0.1, 0.8, 15)
METRICS = ("cindex", "uno", "ibs", *(f"auc_{int(h)}" for h in AUC_HORIZONS))
METRIC_LABELS = {"cindex": "C-index (Harrell)", "uno": "Uno's C", "ibs": "IBS",
                 **{f"auc_{int(h)}": f"AUC {int(h)} mo" for h in AUC_HORIZONS}}


def survival_at(survival: np.ndarray, edges: np.ndarray, times) -> np.ndarray:
    """S(t) for each patient (rows of ``survival``, n × K) at each time: S of the bin containing t.

    Bins are left-closed ``[edges[k], edges[k+1])``; times before the first edge fall in bin 1,
    times at or after the last edge in bin K. Returns n × len(times).
    """
    survival = np.asarray(survival, dtype="float64")
    index = np.searchsorted(np.asarray(edges, dtype="float64"), np.atleast_1d(times), side="right") - 1
    return survival[:, np.clip(index, 0, survival.shape[1] - 1)]


def structured(event, time) -> np.ndarray:
    """scikit-survival's structured survival array."""
    y = np.empty(len(time), dtype=[("event", "?"), ("time", "<f8")])
    y["event"], y["time"] = np.asarray(event).astype(bool), np.asarray(time, dtype="float64")
    return y


# ---------------------------------------------------------------------------------------- point estimates

@dataclass
class Evaluation:
    """Metric values (NaN when not computable) and the reason of each blank."""

    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def set(self, name: str, function) -> None:
        try:
            self.values[name] = float(function())
        except (ValueError, ZeroDivisionError, ArithmeticError) as error:
            self.values[name] = float("nan")
            self.notes[name] = _short(error)


def _short(error: Exception) -> str:
    text = str(error).strip().split("\n")[0]
    return text[:120] or type(error).__name__


def time_grid(times: np.ndarray, cap: float = np.inf) -> np.ndarray:
    """The IBS grid: unique quantiles of ``times``, strictly inside [min, max) and below ``cap``."""
    grid = np.unique(np.quantile(times, GRID_QUANTILES))
    return grid[(grid >= times.min()) & (grid < min(times.max(), cap))]


def cap_follow_up(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
    """``test`` administratively censored just below the largest training time, and that cap.

    The censoring distribution (Kaplan–Meier on ``train``) is undefined after the last training time
    (scikit-survival raises, or the weights are 1/0). Every metric here is evaluated at times below
    the cap only (IBS grid, AUC horizon, Uno's tau; the callers check), and a patient followed beyond
    all of them counts the same whether it is an event at t or censored at the cap: only the weights
    become computable. Harrell's c-index is always computed on the uncapped times.
    """
    cap = float(train["time"].max())
    capped = test.copy()
    beyond = capped["time"] >= cap
    capped["time"][beyond] = np.nextafter(cap, -np.inf)
    capped["event"][beyond] = False
    return capped, cap


def evaluate(train: np.ndarray, test: np.ndarray, risk: np.ndarray, survival: np.ndarray | None,
             edges: np.ndarray | None, tau: float) -> Evaluation:
    """Harrell's and Uno's C, IBS and AUC at the horizons of one set of predictions (scikit-survival)."""
    result = Evaluation()
    n_events = int(test["event"].sum())
    result.set("cindex", lambda: _require_events(n_events) or
               concordance_index_censored(test["event"], test["time"], risk, tied_tol=TIED_TOL)[0])
    capped, cap = cap_follow_up(train, test)

    def uno():
        _require_events(n_events)
        if tau >= cap:
            raise ValueError(f"tau {tau:.1f} mo beyond training follow-up ({cap:.1f} mo)")
        return concordance_index_ipcw(train, capped, risk, tau=tau, tied_tol=TIED_TOL)[0]

    result.set("uno", uno)
    if survival is None or edges is None:
        for name in ("ibs", *(f"auc_{int(h)}" for h in AUC_HORIZONS)):
            result.values[name] = float("nan")
            result.notes[name] = "no survival function (bin_edges.json missing)"
        return result
    grid = time_grid(test["time"], cap)

    def ibs():
        if len(grid) < 2:
            raise ValueError("fewer than 2 grid times inside the follow-up")
        return integrated_brier_score(train, capped, survival_at(survival, edges, grid), grid)

    result.set("ibs", ibs)
    for horizon in AUC_HORIZONS:
        def auc(horizon=horizon):
            if horizon >= test["time"].max():
                raise ValueError(f"horizon {horizon:g} mo beyond follow-up ({test['time'].max():.0f} mo)")
            if horizon >= cap:
                raise ValueError(f"horizon {horizon:g} mo beyond training follow-up ({cap:.0f} mo)")
            if not np.any(test["event"] & (test["time"] <= horizon)):
                raise ValueError(f"no event before {horizon:g} mo")
            estimate = 1.0 - survival_at(survival, edges, [horizon])[:, 0]
            return cumulative_dynamic_auc(train, capped, estimate, [horizon], tied_tol=TIED_TOL)[0][0]

        result.set(f"auc_{int(horizon)}", auc)
    return result


def _require_events(n_events: int) -> None:
    if n_events < 1:
        raise ValueError("no event")


def brier_curve(train: np.ndarray, test: np.ndarray, survival: np.ndarray, edges: np.ndarray):
    """(grid, Brier score at each grid time) with scikit-survival's ``brier_score``."""
    capped, cap = cap_follow_up(train, test)
    grid = time_grid(test["time"], cap)
    return brier_score(train, capped, survival_at(survival, edges, grid), grid)


# ---------------------------------------------------------------------------------------- bootstrap

@dataclass
class PairStatistic:
    """A metric written as Σ_ij w_i w_j N_ij / Σ_ij w_i w_j D_ij (w: resample counts; all ones = the estimate)."""

    numerator: np.ndarray
    denominator: np.ndarray

    def value(self, weights: np.ndarray) -> np.ndarray:
        """The metric for each row of ``weights`` (B × n); NaN where the denominator is 0."""
        num = np.einsum("bi,bi->b", weights @ self.numerator, weights)
        den = np.einsum("bi,bi->b", weights @ self.denominator, weights)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def pair_matrices(train: np.ndarray, test: np.ndarray, risk: np.ndarray, survival: np.ndarray | None,
                  edges: np.ndarray | None, tau: float) -> dict[str, PairStatistic]:
    """Harrell's C, Uno's C and the AUC at each horizon as pair statistics of the ``test`` patients."""
    event, time = test["event"], test["time"]
    comparable = comparable_pairs(event, time).astype("float64")
    out = {"cindex": PairStatistic(comparable * pair_concordance(risk), comparable)}
    capped, cap = cap_follow_up(train, test)
    event, time = capped["event"], capped["time"]
    try:  # no event in ``train`` (a small fold): no censoring distribution, no IPCW metric
        ipcw = CensoringDistributionEstimator().fit(train).predict_ipcw(capped)
    except ValueError:
        ipcw = None
    if ipcw is not None and tau < cap:
        weight = np.where(time < tau, ipcw ** 2, 0.0)
        uno = comparable * weight[:, None]
        out["uno"] = PairStatistic(uno * pair_concordance(risk), uno)
    if survival is not None and edges is not None and ipcw is not None:
        for horizon in (h for h in AUC_HORIZONS if h < cap):
            estimate = 1.0 - survival_at(survival, edges, [horizon])[:, 0]
            cases = (event & (time <= horizon)) * ipcw
            pairs = cases[:, None] * (time > horizon)[None, :].astype("float64")
            out[f"auc_{int(horizon)}"] = PairStatistic(pairs * pair_concordance(estimate), pairs)
    return out


def brier_contributions(train: np.ndarray, test: np.ndarray, survival: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each patient's share of the IBS: the mean of these over patients is ``integrated_brier_score``."""
    capped, cap = cap_follow_up(train, test)
    grid = time_grid(test["time"], cap)
    if len(grid) < 2:
        raise ValueError("fewer than 2 grid times inside the follow-up")
    test = capped
    censoring = CensoringDistributionEstimator().fit(train)
    g_time = censoring.predict_proba(test["time"])
    g_grid = censoring.predict_proba(grid)
    s = survival_at(survival, edges, grid)
    died = (test["event"][:, None] & (test["time"][:, None] <= grid[None, :]))
    alive = test["time"][:, None] > grid[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(died, s ** 2 / g_time[:, None], 0.0) + np.where(alive, (1 - s) ** 2 / g_grid[None, :], 0.0)
    return np.trapezoid(terms, grid, axis=1) / (grid[-1] - grid[0])


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """B × n bootstrap counts (each row sums to n), seeded."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype("float64")


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def fold_mean_cindex(event: np.ndarray, time: np.ndarray, risk: np.ndarray, folds: np.ndarray,
                     counts: np.ndarray) -> np.ndarray:
    """The mean over folds of each fold's Harrell's C (the papers' "mean ± std over folds" statistic)
    for each row of ``counts``: pairs are compared only within a fold, so a resample of the pooled
    patients is a resample of every fold at once. Row of ones: the fold mean itself."""
    comparable = comparable_pairs(event, time).astype("float64")
    agree = comparable * pair_concordance(risk)
    per_fold = []
    for fold in np.unique(folds):
        inside = (folds == fold).astype("float64")
        same = inside[:, None] * inside[None, :]
        per_fold.append(PairStatistic(agree * same, comparable * same).value(counts))
    with warnings.catch_warnings():  # a resample whose folds all lack a comparable pair: NaN, dropped later
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.vstack(per_fold), axis=0)


def bootstrap_values(pairs: dict[str, PairStatistic], brier: np.ndarray | None, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric over the resamples (rows of ``counts``)."""
    values = {name: statistic.value(counts) for name, statistic in pairs.items()}
    if brier is not None:
        values["ibs"] = counts @ brier / counts.sum(axis=1)
    return values


# ---------------------------------------------------------------------------------------- tests over folds

def paired_bootstrap_p(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p of a difference: 2·min(P(Δ* ≤ 0), P(Δ* ≥ 0)), at most 1."""
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        return float("nan")
    return float(min(1.0, 2.0 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))))


def corrected_ttest(differences: Sequence[float], test_train_ratio: float) -> tuple[float, float]:
    """Nadeau & Bengio's corrected resampled t-test over K folds: (t, two-sided p), K − 1 degrees of freedom.

    Var is inflated from 1/K to 1/K + n_test/n_train. Identical differences: p = 1 when they are 0,
    else the test is undefined (ValueError).
    """
    d = np.asarray(differences, dtype="float64")
    if d.size < 2:
        raise ValueError("fewer than 2 folds")
    mean, var = d.mean(), d.var(ddof=1)
    if var == 0:
        if mean == 0:
            return 0.0, 1.0
        raise ValueError("identical non-zero fold differences: zero variance")
    t = mean / math.sqrt((1.0 / d.size + test_train_ratio) * var)
    return float(t), float(2.0 * scipy_stats.t.sf(abs(t), d.size - 1))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and does not count)."""
    p = np.asarray(pvalues, dtype="float64")
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


# ---------------------------------------------------------------------------------------- the report's frames

@dataclass
class ModelData:
    """The pooled out-of-fold predictions of one cohort × model, sorted by case_id."""

    frame: pd.DataFrame
    survival: np.ndarray | None
    edges: np.ndarray | None
    fold_cindex: dict[int, float]
    test_train_ratio: float
    notes: list[str]


def load_model(results: ResultSet, cohort: str, model: str, variant: str = "last") -> ModelData:
    folds = results.get(cohort, model)
    frame = results.out_of_fold(cohort, model, variant).sort_values("case_id").reset_index(drop=True)
    notes: list[str] = []
    columns = sorted((c for c in frame.columns if c.startswith("S_")), key=lambda c: int(c[2:]))
    edges = _edges(folds)
    survival = frame[columns].to_numpy("float64") if columns else None
    if edges is None:
        notes.append("bin_edges.json missing or differing between folds: no survival function")
    elif survival is not None and len(edges) != survival.shape[1] + 1:
        notes.append(f"{len(edges) - 1} bins in bin_edges.json but {survival.shape[1]} S columns")
        edges = None
    counts = frame.groupby("fold").size()
    ratios = []
    for fold in folds:
        n_val = int(counts.get(fold.fold, 0))
        n_train = len(frame) - n_val
        recorded = fold.metrics.get("n_train")
        if recorded is not None and int(recorded) != n_train:
            notes.append(f"fold {fold.fold}: n_train {recorded} in metrics.json, {n_train} patients in the other "
                         f"folds (censoring estimated on the latter)")
        ratios.append(n_val / max(n_train, 1))
    return ModelData(frame=frame, survival=survival, edges=edges,
                     fold_cindex={f.fold: f.cindex(variant) for f in folds},
                     test_train_ratio=float(np.mean(ratios)) if ratios else float("nan"), notes=notes)


def _edges(folds) -> np.ndarray | None:
    found = []
    for fold in folds:
        path = fold.path / "bin_edges.json"
        if not path.is_file():
            return None
        found.append(np.asarray(json.loads(path.read_text())["edges_months"], dtype="float64"))
    if not found or any(not np.allclose(e, found[0]) for e in found[1:]):
        return None
    return found[0]


@dataclass
class Statistics:
    """Everything the report writes: the per cohort × model table, the comparisons, calibration data."""

    table: pd.DataFrame
    folds: pd.DataFrame
    comparisons: pd.DataFrame
    calibration: pd.DataFrame
    n_boot: int
    seed: int


def compute_statistics(results: ResultSet, *, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED,
                       variant: str = "last", n_groups: int = 4) -> Statistics:
    """Per-fold and pooled metrics, bootstrap intervals, paired comparisons and calibration groups."""
    if n_boot < 10:
        raise ValueError(f"report.bootstrap must be at least 10 resamples, got {n_boot}")
    rows, fold_rows, comparison_rows, calibration_rows = [], [], [], []
    for cohort in results.cohorts:
        models = [m for m in results.models if results.get(cohort, m)]
        data = {m: load_model(results, cohort, m, variant) for m in models}
        reference = data[models[0]].frame
        tau = float(np.quantile(reference["time"], TAU_QUANTILE))
        boot: dict[str, dict[str, np.ndarray]] = {}
        counts = None
        for model in models:
            d = data[model]
            y = structured(d.frame["event"], d.frame["time"])
            row = {"cohort": cohort, "model": model, "n": len(y), "events": int(y["event"].sum()),
                   "tau_months": tau}
            notes = list(d.notes)
            fold_values = {name: [] for name in METRICS}
            fold_reasons: dict[str, str] = {}
            for fold in sorted(d.frame["fold"].unique()):
                mask = (d.frame["fold"] == fold).to_numpy()
                s = d.survival[mask] if d.survival is not None else None
                censoring = y[~mask]
                if len(censoring) == 0:
                    # One fold only: no other fold's patients to estimate the censoring distribution
                    # from, so the IPCW metrics use the validation patients' own (as the pooled row).
                    censoring = y[mask]
                    fold_reasons.setdefault("censoring", f"fold {fold}: censoring distribution from "
                                            "its own patients (one fold only)")
                ev = evaluate(censoring, y[mask], d.frame.loc[mask, "risk"].to_numpy(), s, d.edges, tau)
                fold_rows.append({"cohort": cohort, "model": model, "fold": int(fold), **ev.values,
                                  "note": "; ".join(f"{k}: {v}" for k, v in ev.notes.items())})
                for name in METRICS:
                    fold_values[name].append(ev.values[name])
                    if name in ev.notes:
                        fold_reasons.setdefault(name, f"fold {fold}: {ev.notes[name]}")
            pooled = evaluate(y, y, d.frame["risk"].to_numpy(), d.survival, d.edges, tau)
            counts = resample_counts(len(y), n_boot, seed) if counts is None or counts.shape[1] != len(y) else counts
            pairs = pair_matrices(y, y, d.frame["risk"].to_numpy(), d.survival, d.edges, tau)
            try:
                brier = (brier_contributions(y, y, d.survival, d.edges)
                         if d.survival is not None and d.edges is not None else None)
            except ValueError:
                brier = None
            boot[model] = bootstrap_values(pairs, brier, counts)
            folds_of = d.frame["fold"].to_numpy()
            row["cindex_fold_mean_low"], row["cindex_fold_mean_high"] = percentile_interval(
                fold_mean_cindex(y["event"], y["time"], d.frame["risk"].to_numpy(), folds_of, counts))
            if "censoring" in fold_reasons:
                notes.append(fold_reasons["censoring"])
            for name in METRICS:
                values = np.asarray(fold_values[name], dtype="float64")
                finite = values[np.isfinite(values)]
                row[f"{name}_fold_mean"] = float(finite.mean()) if finite.size else float("nan")
                row[f"{name}_fold_std"] = float(finite.std()) if finite.size else float("nan")
                if finite.size < values.size:
                    notes.append(f"{name}: {values.size - finite.size} of {values.size} folds not computable "
                                 f"(e.g. {fold_reasons[name]})")
                row[f"{name}_pooled"] = pooled.values[name]
                if name in pooled.notes:
                    notes.append(f"{name} pooled: {pooled.notes[name]}")
                low, high = (percentile_interval(boot[model][name]) if name in boot[model] and
                             np.isfinite(pooled.values[name]) else (float("nan"), float("nan")))
                row[f"{name}_low"], row[f"{name}_high"] = low, high
            row["note"] = "; ".join(dict.fromkeys(notes))
            rows.append(row)
            calibration_rows += calibration_groups(cohort, model, y, d.survival, d.edges, n_groups)
        comparison_rows += _compare(cohort, models, data, boot)
    table = pd.DataFrame(rows)
    comparisons = pd.DataFrame(comparison_rows, columns=COMPARISON_COLUMNS)
    for column in ("p_bootstrap", "p_nadeau_bengio"):
        comparisons[f"{column}_holm"] = (comparisons.groupby("cohort")[column].transform(lambda p: holm(p.to_numpy()))
                                         if not comparisons.empty else pd.Series(dtype="float64"))
    return Statistics(table=table, folds=pd.DataFrame(fold_rows), comparisons=comparisons,
                      calibration=pd.DataFrame(calibration_rows, columns=CALIBRATION_COLUMNS), n_boot=n_boot, seed=seed)


COMPARISON_COLUMNS = ["cohort", "model_a", "model_b", "n", "delta_cindex", "delta_low", "delta_high", "p_bootstrap",
                      "fold_delta_mean", "t_nadeau_bengio", "p_nadeau_bengio", "note"]


def _compare(cohort: str, models: list[str], data: dict[str, ModelData], boot: dict) -> list[dict]:
    rows = []
    for a, b in itertools.combinations(models, 2):
        da, db = data[a], data[b]
        note = []
        same = all(da.frame[c].tolist() == db.frame[c].tolist() for c in ("case_id", "time", "event"))
        row = {"cohort": cohort, "model_a": a, "model_b": b, "n": len(da.frame)}
        if same:
            time, censored = da.frame["time"].to_numpy(), 1 - da.frame["event"].to_numpy().astype(int)
            # Harrell's C as scikit-survival's (bit for bit), NaN where it raises (no event, no comparable pair)
            delta = (concordance(time, censored, da.frame["risk"].to_numpy())
                     - concordance(time, censored, db.frame["risk"].to_numpy()))
            if math.isnan(delta):
                note.append("no comparable pair (no event): no c-index difference")
            deltas = boot[a]["cindex"] - boot[b]["cindex"]
            low, high = percentile_interval(deltas)
            row.update(delta_cindex=delta, delta_low=low, delta_high=high, p_bootstrap=paired_bootstrap_p(deltas))
        else:
            note.append("different patients or outcomes: no paired bootstrap")
        common = sorted(set(da.fold_cindex) & set(db.fold_cindex))
        differences = [da.fold_cindex[k] - db.fold_cindex[k] for k in common]
        row["fold_delta_mean"] = float(np.mean(differences)) if differences else float("nan")
        try:
            row["t_nadeau_bengio"], row["p_nadeau_bengio"] = corrected_ttest(differences, da.test_train_ratio)
        except ValueError as error:
            note.append(f"corrected t-test: {error}")
        row["note"] = "; ".join(note)
        rows.append({column: row.get(column, float("nan")) for column in COMPARISON_COLUMNS})
    return rows


CALIBRATION_COLUMNS = ["cohort", "model", "horizon_months", "group", "n", "predicted", "observed", "observed_low",
                       "observed_high"]


def calibration_horizon(time: np.ndarray) -> float:
    """36 months when at least a quarter of the patients are followed beyond it, else the median observed time."""
    return 36.0 if np.mean(time > 36.0) >= 0.25 else float(np.median(time))


def calibration_groups(cohort: str, model: str, y: np.ndarray, survival: np.ndarray | None,
                       edges: np.ndarray | None, n_groups: int) -> list[dict]:
    """Predicted S(horizon) (mean) against Kaplan–Meier S(horizon) in quantile groups of predicted S(horizon)."""
    if survival is None or edges is None:
        return []
    horizon = calibration_horizon(y["time"])
    predicted = survival_at(survival, edges, [horizon])[:, 0]
    groups = min(n_groups, max(1, len(y) // 10))
    ranks = pd.qcut(pd.Series(predicted).rank(method="first"), groups, labels=False).to_numpy()
    rows = []
    for group in range(groups):
        mask = ranks == group
        times, km, (low, high) = kaplan_meier_estimator(y["event"][mask], y["time"][mask], conf_type="log-log")
        at = np.searchsorted(times, horizon, side="right") - 1
        observed = (1.0, 1.0, 1.0) if at < 0 else (km[at], low[at], high[at])
        rows.append({"cohort": cohort, "model": model, "horizon_months": horizon, "group": group + 1,
                     "n": int(mask.sum()), "predicted": float(predicted[mask].mean()), "observed": float(observed[0]),
                     "observed_low": float(observed[1]), "observed_high": float(observed[2])})
    return rows
