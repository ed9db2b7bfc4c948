"""Harrell's concordance index as MCAT reports it (scikit-survival's ``concordance_index_censored``).

For the training loop (every epoch's training and validation c-index, ``metrics.json``) and for the
report's bootstrap (:mod:`mmsurv.report.stats`), which writes every pair statistic as a matrix.

MCAT calls ``concordance_index_censored(event = 1 − censorship, time = survival_months, estimate =
risk, tied_tol = 1e-8)`` with risk ``−Σ_k S_k``, ``S = cumprod(1 − hazards)``. Its definition, used
here as pair matrices: patients i and j are comparable when i has the event and t_j > t_i, or t_j =
t_i and j is censored; a comparable pair counts 1 when risk_i > risk_j, ½ when the risks are within
``tied_tol``, else 0; C = counts / comparable pairs. The counts are whole and half numbers, so the
result equals scikit-survival's bit for bit (``tests/train/test_train_metrics.py``), computed
without importing scikit-survival and scikit-learn (0.85 s of every training job's start-up). The
report's other metrics (Uno's C, IBS, AUC, Kaplan-Meier) call scikit-survival itself.
"""

from __future__ import annotations

import numpy as np

TIED_TOL = 1e-8
BLOCK = 1024  # rows of the pair matrices at a time: memory stays O(BLOCK · n) for large cohorts


def comparable_pairs(event: np.ndarray, time: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """n × n bool (``rows`` × n): (i, j) comparable as in scikit-survival (i an event, and t_j > t_i
    or t_j = t_i with j censored)."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time)
    later = time[None, :] > time[rows, None]
    tied = (time[None, :] == time[rows, None]) & ~event[None, :]
    return event[rows, None] & (later | tied)


def pair_concordance(estimate: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """rows × n: 1 when estimate_i > estimate_j, 0.5 when tied (within :data:`TIED_TOL`), else 0
    (``others``: the column patients' estimates, default ``estimate`` itself)."""
    estimate = np.asarray(estimate, dtype="float64")
    others = estimate if others is None else np.asarray(others, dtype="float64")
    diff = estimate[:, None] - others[None, :]
    return np.where(np.abs(diff) <= TIED_TOL, 0.5, (diff > 0).astype("float64"))


def concordance(time, censorship, risk) -> float:
    """Harrell's C of ``risk``; NaN when no pair is comparable (e.g. every patient censored) or a
    risk is not finite (where scikit-survival raises)."""
    time = np.asarray(time, dtype="float64")
    event = (1 - np.asarray(censorship)).astype(bool)
    risk = np.asarray(risk, dtype="float64")
    if len(time) < 2 or not event.any() or not (np.isfinite(risk).all() and np.isfinite(time).all()):
        return float("nan")
    agree, pairs = 0.0, 0
    for start in range(0, len(time), BLOCK):
        rows = slice(start, start + BLOCK)
        comparable = comparable_pairs(event, time, rows)
        agree += float((comparable * pair_concordance(risk[rows], risk)).sum())
        pairs += int(comparable.sum())
    return agree / pairs if pairs else float("nan")
