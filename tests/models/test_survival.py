"""Discrete-time survival on the model side: MCAT's NLL against hand-computed values, its logits
form, the survival curve and MCAT's risk."""

from __future__ import annotations

import math

import pytest
import torch

from mmsurv.models.base import ModelOutput, SurvivalModel, Target
from mmsurv.models.survival import discrete_survival, mcat_risk, nll_logits_loss, nll_surv_loss

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
    assert nll_surv_loss(hazards, survival, labels, censorship, alpha=alpha).item() == pytest.approx(expected, rel=1e-6)
    assert nll_surv_loss(hazards, survival, labels, censorship, reduction="sum").item() == pytest.approx(unc + cen, rel=1e-6)


def test_nll_clamps_with_eps():
    hazards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    survival = torch.cumprod(1 - hazards, dim=1)
    value = nll_surv_loss(hazards, survival, torch.tensor([0]), torch.tensor([0]))
    assert value.item() == pytest.approx(-math.log(1e-7), rel=1e-5)


def test_the_logits_form_and_the_curve_equal_the_hazard_form():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hazards = torch.sigmoid(logits)
    survival = torch.cumprod(1 - hazards, dim=1)
    torch.testing.assert_close(discrete_survival(logits), survival)
    label, censorship = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0])
    for alpha in (0.0, 0.3):
        torch.testing.assert_close(nll_logits_loss(logits, label, censorship, alpha),
                                   nll_surv_loss(hazards, survival, label, censorship, alpha))
    assert mcat_risk(torch.tensor([[0.9, 0.5], [0.99, 0.9]])).tolist() == pytest.approx([-1.4, -1.89])


def test_the_contract_loss_takes_alpha_from_the_target():
    output = ModelOutput(logits=torch.tensor([[0.1, -0.3, 0.2, 0.0]]))
    plain = Target(torch.tensor([2]), torch.tensor([0.0]), torch.tensor([5.0]))
    weighted = Target(plain.label, plain.censorship, plain.time, alpha=0.5)
    model = SurvivalModel()
    assert model.loss(output, plain)["surv"] == nll_logits_loss(output.logits, plain.label, plain.censorship)
    assert model.loss(output, weighted)["surv"] == nll_logits_loss(output.logits, plain.label, plain.censorship, 0.5)
    censored = Target(plain.label, torch.tensor([1.0]), plain.time, alpha=0.5)
    assert model.loss(output, censored)["surv"] < model.loss(output, Target(plain.label, torch.tensor([1.0]), plain.time))["surv"]
    assert weighted.to("cpu").alpha == 0.5
