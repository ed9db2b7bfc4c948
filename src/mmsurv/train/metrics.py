"""Concordance index as MCAT computes it (scikit-survival's Harrell's C).

``concordance_index_censored(event = 1 − censorship, time = survival_months, estimate = risk,
tied_tol = 1e-8)`` with risk ``−Σ_k S_k``, ``S = cumprod(1 − hazards)``.
"""

from __future__ import annotations

import numpy as np
from sksurv.metrics import concordance_index_censored


def concordance(time, censorship, risk) -> float:
    """Harrell's C of ``risk``; NaN when no pair is comparable (e.g. every patient censored)."""
    time = np.asarray(time, dtype="float64")
    event = (1 - np.asarray(censorship)).astype(bool)
    risk = np.asarray(risk, dtype="float64")
    if len(time) < 2 or not event.any():
        return float("nan")
    try:
        return float(concordance_index_censored(event, time, risk, tied_tol=1e-08)[0])
    except (ValueError, ZeroDivisionError):
        return float("nan")
