"""Survival labels exactly as MCAT builds them: quartile bins of the uncensored patients' times.

The discrete-time models of this literature (MCAT, Chen et al. ICCV 2021, and its successors)
predict one hazard per time bin. The bins are fitted ONCE on the whole cohort, at patient level
(one row per case, as MCAT's ``drop_duplicates('case_id')``):

1. the inner edges are the quartiles (``pd.qcut(q=n_bins)``) of ``survival_months`` over the
   UNCENSORED patients (``censorship == 0``) only;
2. the outer edges are replaced by the minimum − ``eps`` and maximum + ``eps`` over ALL patients
   (censored too), ``eps = 1e-6``;
3. every patient gets the bin of its time with left-closed intervals
   (``pd.cut(right=False, include_lowest=True)``): bin ``k`` is ``[edge_k, edge_{k+1})``.

MCAT then crosses bin and censorship into ``2 * n_bins`` classes (``class = 2 * bin + censorship``)
that its class-balanced sampler uses (:func:`mmsurv.data.dataset.balanced_sampler`).

The edges are written beside the results as JSON (:func:`write_bin_edges`) so predictions can be
read back in months.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mmsurv.data.cohort import CohortError
from mmsurv.io import atomic_write_text

N_BINS = 4
EDGE_EPS = 1e-6


def fit_bin_edges(patients: pd.DataFrame, n_bins: int = N_BINS, eps: float = EDGE_EPS) -> np.ndarray:
    """The ``n_bins + 1`` edges (months) of MCAT's discretisation, fitted on one row per patient.

    ``patients`` needs ``survival_months`` and ``censorship`` (1 = censored). Raises
    :class:`CohortError` when there are fewer distinct uncensored times than bins.
    """
    _require_columns(patients, ("survival_months", "censorship"))
    if "case_id" in patients.columns and patients["case_id"].duplicated().any():
        raise CohortError("fit_bin_edges: expects one row per patient (case_id duplicated)")
    times = patients["survival_months"].to_numpy(dtype="float64")
    uncensored = times[patients["censorship"].to_numpy() < 1]
    if len(np.unique(uncensored)) < n_bins:
        raise CohortError(
            f"survival bins: {len(uncensored)} uncensored patient(s) with {len(np.unique(uncensored))} distinct "
            f"time(s) cannot give {n_bins} quantile bins"
        )
    _, edges = pd.qcut(uncensored, q=n_bins, retbins=True, labels=False)
    edges = np.asarray(edges, dtype="float64").copy()
    edges[0] = times.min() - eps
    edges[-1] = times.max() + eps
    return edges


def discretize(times, edges: np.ndarray) -> np.ndarray:
    """Bin index (0 … len(edges) − 2) of each time, left-closed intervals as MCAT.

    Times outside the edges (possible only when edges fitted on one cohort are applied to another)
    are clipped to the first / last bin, the last bin being open-ended in a survival sense.
    """
    edges = np.asarray(edges, dtype="float64")
    values = np.asarray(times, dtype="float64")
    clipped = np.clip(values, edges[0], np.nextafter(edges[-1], -np.inf))
    bins = pd.cut(clipped, bins=edges, right=False, include_lowest=True, labels=False)
    return np.asarray(bins, dtype="int64")


def survival_labels(patients: pd.DataFrame, edges: np.ndarray) -> pd.DataFrame:
    """``patients`` plus ``bin`` (discrete time), ``event`` (1 − censorship) and ``class_label``.

    ``class_label = 2 * bin + censorship`` is MCAT's ``label_dict[(bin, censorship)]``.
    """
    _require_columns(patients, ("survival_months", "censorship"))
    labelled = patients.copy()
    labelled["bin"] = discretize(labelled["survival_months"], edges)
    labelled["event"] = 1 - labelled["censorship"].astype("int64")
    labelled["class_label"] = 2 * labelled["bin"] + labelled["censorship"].astype("int64")
    return labelled


def write_bin_edges(path: str | os.PathLike, edges: np.ndarray, *, n_patients: int, n_uncensored: int) -> None:
    """Save the edges (months) and how they were fitted, atomically, as JSON."""
    document = {
        "edges_months": [float(edge) for edge in edges],
        "n_bins": len(edges) - 1,
        "rule": "quartiles of uncensored patients' survival_months (whole cohort, patient level); "
                f"outer edges min-{EDGE_EPS:g} / max+{EDGE_EPS:g} over all patients; left-closed bins",
        "n_patients": int(n_patients),
        "n_uncensored": int(n_uncensored),
    }
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")


def read_bin_edges(path: str | os.PathLike) -> np.ndarray:
    """Edges written by :func:`write_bin_edges`."""
    document = json.loads(Path(path).read_text())
    try:
        return np.asarray(document["edges_months"], dtype="float64")
    except (KeyError, TypeError) as error:
        raise CohortError(f"{path}: no 'edges_months' list ({error})") from error


def _require_columns(frame: pd.DataFrame, columns) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise CohortError(f"survival labels: missing column(s) {', '.join(missing)}")
