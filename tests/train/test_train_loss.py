"""The Cox loss, the c-index and the loop's L1 and threads (MCAT's NLL: tests/models/test_survival.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmsurv.train.loop import TrainConfig, _window_l1, l1_norm
from mmsurv.train.loss import cox_ph_loss
from mmsurv.train.metrics import concordance
from mmsurv.train.seed import default_threads


def test_cox_matches_hand_computation():
    loss = cox_ph_loss(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 0, 1]))
    assert loss.item() == pytest.approx(math.log(1 + math.e + math.e**2) / 2, rel=1e-6)
    assert cox_ph_loss(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0])).item() == 0.0


def test_cindex_perfect_and_reversed():
    times = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    censorship = np.array([0, 0, 1, 0, 0])
    assert concordance(times, censorship, -times) == 1.0
    assert concordance(times, censorship, times) == 0.0
    assert np.isnan(concordance(times, np.ones(5), -times))  # no event: undefined


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
