"""MCAT's NLL against hand-computed values, the Cox loss, the c-index and the loop's L1 and threads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmsurv.train.loop import TrainConfig, _window_l1, l1_norm
from mmsurv.train.loss import NLLSurvLoss, cox_ph_loss, nll_surv_loss
from mmsurv.train.metrics import concordance, risk_from_survival
from mmsurv.train.seed import default_threads

HAZARDS = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
SURVIVAL = torch.cumprod(1 - HAZARDS, dim=1)  # 0.9, 0.72, 0.504, 0.3024


def test_nll_matches_hand_computation():
    # death in bin 2: -[log S(1) + log h(2)] = -[log 0.72 + log 0.3]
    death = nll_surv_loss(HAZARDS, SURVIVAL, torch.tensor([2]), torch.tensor([0]))
    assert death.item() == pytest.approx(-(math.log(0.72) + math.log(0.3)), rel=1e-6)
    # censored in bin 1: -log S(1) = -log 0.72
    censored = nll_surv_loss(HAZARDS, SURVIVAL, torch.tensor([1]), torch.tensor([1]))
    assert censored.item() == pytest.approx(-math.log(0.72), rel=1e-6)
    # death in the first bin: S_pad[0] = 1, so only -log h(0)
    first = nll_surv_loss(HAZARDS, SURVIVAL, torch.tensor([0]), torch.tensor([0]))
    assert first.item() == pytest.approx(-math.log(0.1), rel=1e-6)


def test_nll_batch_mean_and_alpha():
    hazards, survival = HAZARDS.repeat(2, 1), SURVIVAL.repeat(2, 1)
    labels, censorship = torch.tensor([2, 1]), torch.tensor([0, 1])
    unc, cen = -(math.log(0.72) + math.log(0.3)), -math.log(0.72)
    assert nll_surv_loss(hazards, survival, labels, censorship).item() == pytest.approx((unc + cen) / 2, rel=1e-6)
    # alpha re-weights: (1 - a)(cen + unc) + a * unc
    alpha = 0.4
    expected = ((1 - alpha) * unc + alpha * unc + (1 - alpha) * cen) / 2
    assert NLLSurvLoss(alpha=alpha)(hazards, survival, labels, censorship).item() == pytest.approx(expected, rel=1e-6)
    assert nll_surv_loss(hazards, survival, labels, censorship, reduction="sum").item() == pytest.approx(unc + cen, rel=1e-6)


def test_nll_clamps_with_eps():
    hazards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    survival = torch.cumprod(1 - hazards, dim=1)
    value = nll_surv_loss(hazards, survival, torch.tensor([0]), torch.tensor([0]))
    assert value.item() == pytest.approx(-math.log(1e-7), rel=1e-5)


def test_cox_matches_hand_computation():
    loss = cox_ph_loss(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 0, 1]))
    assert loss.item() == pytest.approx(math.log(1 + math.e + math.e**2) / 2, rel=1e-6)
    assert cox_ph_loss(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0])).item() == 0.0


def test_cindex_perfect_reversed_and_mcat_risk():
    times = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    censorship = np.array([0, 0, 1, 0, 0])
    assert concordance(times, censorship, -times) == 1.0
    assert concordance(times, censorship, times) == 0.0
    assert np.isnan(concordance(times, np.ones(5), -times))  # no event: undefined
    survival = np.array([[0.9, 0.5], [0.99, 0.9]])
    assert risk_from_survival(survival).tolist() == pytest.approx([-1.4, -1.89])


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown key.*lrate"):
        TrainConfig.from_dict({"lrate": 1})
    with pytest.raises(ValueError, match="holdout_fraction"):
        TrainConfig.from_dict({"early_stopping_patience": 3})
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig.from_dict({"optimizer": "sgd"})


def test_l1_once_per_window_equals_one_penalty_per_patient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0  # |w| has gradient 0 at 0 either way
    config = TrainConfig(l1_reg=1e-3)
    for _ in range(7):  # MCAT: λ·Σ|w| added to every patient's loss of a window of 7
        (config.l1_reg * l1_norm(model)).backward()
    per_patient = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    value = _window_l1(model, config, 7, backward=True)
    for grad, reference in zip((p.grad for p in model.parameters()), per_patient):
        torch.testing.assert_close(grad, reference)
    assert value == pytest.approx(7 * 1e-3 * float(l1_norm(model).detach()), rel=1e-6)
    model.zero_grad(set_to_none=True)
    assert _window_l1(model, config, 7, backward=False) == pytest.approx(value)
    assert all(p.grad is None for p in model.parameters())
    assert _window_l1(model, TrainConfig(l1_reg=0.0), 7, backward=True) == 0.0


def test_genomic_only_models_default_to_one_thread():
    assert default_threads("omic") == 1
    assert 1 <= default_threads("path") <= 2 and default_threads("multimodal") == default_threads()
