"""Survival discretisation exactly as MCAT: quartiles of uncensored patients, stretched edges, left-closed bins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmsurv.data.cohort import CohortError, read_cohort_table
from mmsurv.data.survival import (
    discretize,
    fit_bin_edges,
    read_bin_edges,
    survival_labels,
    write_bin_edges,
)
from mmsurv_testdata import shared_path


def _patients(times, censorship):
    return pd.DataFrame({"case_id": [f"C{i}" for i in range(len(times))], "survival_months": times,
                         "censorship": censorship})


def test_blca_edges_match_mcat():
    table = read_cohort_table(shared_path("data", "tcga", "tables", "tcga_blca_all_clean.csv.gz"))
    edges = fit_bin_edges(table.patients())
    assert edges == pytest.approx([0.49, 7.62, 13.57, 21.85, 163.17], abs=0.01)


def test_inner_edges_use_uncensored_only_and_outer_edges_all_patients():
    times = [1.0, 2.0, 3.0, 4.0, 5.0, 100.0, 0.5]
    censorship = [0, 0, 0, 0, 0, 1, 1]  # the extremes are censored
    edges = fit_bin_edges(_patients(times, censorship))
    assert edges[1:-1] == pytest.approx(np.quantile([1, 2, 3, 4, 5], [0.25, 0.5, 0.75]))
    assert edges[0] == pytest.approx(0.5 - 1e-6, abs=1e-12)
    assert edges[-1] == pytest.approx(100.0 + 1e-6, abs=1e-12)


def test_bins_are_left_closed():
    edges = np.array([0.0, 2.0, 3.0, 4.0, 10.0])
    assert discretize([0.0, 1.999, 2.0, 3.0, 3.5, 4.0, 9.99], edges).tolist() == [0, 0, 1, 2, 2, 3, 3]
    assert discretize([-5.0, 50.0], edges).tolist() == [0, 3]  # outside: clipped to the end bins


def test_labels_cross_bin_and_censorship():
    patients = _patients([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [0, 0, 0, 0, 1, 0, 0, 1])
    labelled = survival_labels(patients, fit_bin_edges(patients))
    assert (labelled["class_label"] == 2 * labelled["bin"] + labelled["censorship"]).all()
    assert (labelled["event"] == 1 - labelled["censorship"]).all()
    assert labelled["bin"].min() == 0 and labelled["bin"].max() == 3


def test_too_few_events_is_a_clear_error():
    with pytest.raises(CohortError, match="uncensored"):
        fit_bin_edges(_patients([1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1]))


def test_edges_round_trip_json(tmp_path):
    edges = np.array([0.49, 7.62, 13.57, 21.85, 163.17])
    write_bin_edges(tmp_path / "bin_edges.json", edges, n_patients=10, n_uncensored=5)
    assert read_bin_edges(tmp_path / "bin_edges.json") == pytest.approx(edges)
