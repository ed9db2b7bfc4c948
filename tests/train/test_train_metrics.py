"""Harrell's C of the training loop (mmsurv.train.metrics) is scikit-survival's, bit for bit."""

import numpy as np
import pytest
from sksurv.metrics import concordance_index_censored

from mmsurv.train.metrics import BLOCK, concordance


def sksurv_cindex(time, censorship, risk) -> float:
    try:
        return float(concordance_index_censored((1 - censorship).astype(bool), time, risk, tied_tol=1e-8)[0])
    except (ValueError, ZeroDivisionError):
        return float("nan")


@pytest.mark.parametrize("n", [2, 3, 7, 40, 300])
@pytest.mark.parametrize("seed", range(6))
def test_equals_scikit_survival_with_tied_times_and_risks(n, seed):
    rng = np.random.default_rng(seed * 1000 + n)
    time = rng.integers(1, max(2, n // 3), n).astype("float64")  # many tied times
    censorship = (rng.random(n) < 0.4).astype(int)
    risk = np.round(rng.standard_normal(n), 1)  # many tied risks
    risk[: n // 4] += 1e-9  # ties within the tolerance, not exact
    assert concordance(time, censorship, risk) == sksurv_cindex(time, censorship, risk) or (
        np.isnan(concordance(time, censorship, risk)) and np.isnan(sksurv_cindex(time, censorship, risk)))


def test_blocks_of_rows_give_the_same_number():
    rng = np.random.default_rng(3)
    n = BLOCK + 37
    time, censorship, risk = rng.exponential(30, n), (rng.random(n) < 0.6).astype(int), rng.standard_normal(n)
    assert concordance(time, censorship, risk) == sksurv_cindex(time, censorship, risk)


def test_undefined_cases_are_nan():
    time = np.array([1.0, 2.0, 3.0])
    assert np.isnan(concordance(time, np.ones(3), [0.1, 0.2, 0.3]))  # no event
    assert np.isnan(concordance(time[:1], np.zeros(1), [0.1]))  # one patient
    assert np.isnan(concordance(time, np.zeros(3), [0.1, np.nan, 0.3]))  # a risk that is not a number
    assert np.isnan(concordance([2.0, 2.0], [0, 0], [0.1, 0.2]))  # two events at the same time: no pair
