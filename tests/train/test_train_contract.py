"""The loop under contract v2: loss scaling, model-defined risk, batches, per-model settings, plugins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mmsurv.data.inputs import collate
from mmsurv.models.base import ModelOutput, SurvivalModel
from mmsurv.train.loop import TrainConfig, evaluate, train_epoch
from mmsurv.train.run import resolve_settings

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tests/fixtures/coord_probe_model.py"
MMSURV = Path(sys.executable).parent / "mmsurv"


class FakeSample:
    def __init__(self, index: int, omic: torch.Tensor):
        self.case_id, self.inputs = f"P{index}", {"omic": omic}
        self.label, self.censorship, self.time, self.n_patches = index % 4, index % 2, float(10 + index), 0


class FakeDataset:
    """Enough of SurvivalDataset for the loop: indexable samples and class labels."""

    def __init__(self, n: int = 32, dim: int = 6, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.samples = [FakeSample(i, torch.randn(dim, generator=generator)) for i in range(n)]
        self.class_labels = np.array([s.label for s in self.samples])
        self.case_ids = [s.case_id for s in self.samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


class WithAux(SurvivalModel):
    """A linear hazard model with a fixed-weight auxiliary term on a separate parameter."""

    inputs = ("omic",)
    batchable = True

    def __init__(self, dim: int = 6, aux_weight: float = 0.5, own_risk: bool = False):
        super().__init__(n_bins=4, omic_dim=dim)
        self.linear = nn.Linear(dim, 4)
        self.aux_parameter = nn.Parameter(torch.tensor(2.0))
        self.aux_weight, self.own_risk = aux_weight, own_risk

    def forward(self, batch):
        logits = self.linear(batch.omic)
        aux = {"aux": self.aux_weight * self.aux_parameter ** 2}
        risk = batch.omic[:, 0] if self.own_risk else None
        return ModelOutput(logits=logits, aux=aux, risk_score=risk)


def one_window_gradients(model: nn.Module, dataset, config: TrainConfig) -> dict[str, torch.Tensor]:
    """Gradients after one accumulation window (the optimiser does nothing: lr 0)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    grads = {}
    original_step = optimizer.step

    def capture(*args, **kwargs):
        grads.update({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        return original_step(*args, **kwargs)

    optimizer.step = capture
    train_epoch(model, dataset, optimizer, config, torch.Generator().manual_seed(0), torch.device("cpu"))
    return grads


def test_auxiliary_term_keeps_its_share_of_the_gradient_whatever_the_accumulation():
    dataset = FakeDataset(n=32)
    shares = {}
    for accumulation in (1, 32):
        torch.manual_seed(0)
        model = WithAux()
        config = TrainConfig(grad_accum=accumulation, weighted_sampling=False, epochs=1)
        if accumulation == 1:  # one window of one patient: restrict the epoch to the first patient
            grads = one_window_gradients(model, FakeDataset(n=1), config)
        else:
            grads = one_window_gradients(model, dataset, config)
        shares[accumulation] = float(grads["aux_parameter"]) / float(grads["linear.bias"].abs().sum() + grads["aux_parameter"].abs())
    # 32 patients share one window: the auxiliary gradient must not be 32 times the survival one's
    aux_1, aux_32 = shares[1], shares[32]
    assert aux_32 == pytest.approx(aux_1, rel=0.5), shares
    # and in absolute terms: over a window the aux term contributes d(0.5 p²)/dp = 2.0 once
    torch.manual_seed(0)
    grads = one_window_gradients(WithAux(), dataset, TrainConfig(grad_accum=32, weighted_sampling=False))
    assert float(grads["aux_parameter"]) == pytest.approx(2.0, rel=1e-5)


def test_the_model_risk_is_what_the_cindex_ranks():
    dataset = FakeDataset(n=20)
    model = WithAux(own_risk=True)
    result = evaluate(model, dataset, torch.device("cpu"), batch_size=3)
    expected = np.array([float(s.inputs["omic"][0]) for s in dataset.samples])
    np.testing.assert_allclose(result.risk, expected, rtol=1e-6)
    from sksurv.metrics import concordance_index_censored

    times = np.array([s.time for s in dataset.samples])
    events = np.array([1 - s.censorship for s in dataset.samples], dtype=bool)
    assert result.cindex == pytest.approx(concordance_index_censored(events, times, expected)[0])


def test_snn_batch_32_equals_batch_1_with_accumulation_32():
    from mmsurv.models import ModelInputs, build_model

    dataset = FakeDataset(n=32, dim=12)
    grads = []
    for batch_size, accumulation in ((32, 1), (1, 32)):
        torch.manual_seed(0)
        model = build_model("snn", ModelInputs(omic_dim=12), {"dropout": 0.0})
        config = TrainConfig(batch_size=batch_size, grad_accum=accumulation, weighted_sampling=False, l1_reg=1e-4)
        grads.append(one_window_gradients(model, dataset, config))
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_collate_pads_bags_and_masks_the_padding():
    class Sample:
        def __init__(self, n):
            self.inputs = {"path": torch.ones(n, 3), "coords": torch.ones(n, 2, dtype=torch.long),
                           "omic_groups": [torch.zeros(2), torch.zeros(5)]}
            self.label, self.censorship, self.time = 1, 0, 3.0

    batch, target = collate([Sample(2), Sample(5)])
    assert batch.path.shape == (2, 5, 3) and batch.coords.shape == (2, 5, 2)
    assert batch.mask.tolist() == [[True, True, False, False, False], [True] * 5]
    assert batch.path[0, 2:].abs().sum() == 0 and [g.shape for g in batch.omic_groups] == [(2, 2), (2, 5)]
    assert target.label.tolist() == [1, 1]


def test_settings_resolve_package_then_model_then_config_then_model_config():
    config = {"training": {"epochs": 7, "lr": 3e-4},
              "models": {"snn": {"training": {"lr": 1e-3}, "dropout": 0.1},
                         "snn_selu": {"model": "snn", "activation": "selu", "data": {"n_bins": 6}}}}
    data, training, resolved, _ = resolve_settings(config, "snn")
    assert training.l1_reg == 1e-4  # SNN's paper default (MCAT's reg1e-04 runs)
    assert training.epochs == 7 and training.lr == 1e-3 and resolved.params == {"dropout": 0.1}
    data, training, resolved, _ = resolve_settings(config, "snn_selu")
    assert resolved.spec.name == "snn" and resolved.params == {"activation": "selu"} and data["n_bins"] == 6
    assert training.lr == 3e-4
    with pytest.raises(ValueError, match="not batchable"):
        resolve_settings({"training": {"batch_size": 4}}, "abmil")
    with pytest.raises(ValueError, match="unknown data key"):
        resolve_settings({"models": {"snn": {"data": {"grups": "x"}}}}, "snn")


@pytest.mark.slow
def test_a_plugin_model_reading_coords_and_pathways_trains_through_the_cli(tmp_path, small_cohort):
    out = tmp_path / "fold0"
    command = [str(MMSURV), "train", "--plugin", str(PLUGIN), "--model", "coord_probe",
               "--fold", "0", "--out-dir", str(out), *small_cohort["args"]]
    config = tmp_path / "config.yaml"
    config.write_text("data: {feature_dim: 16}\ntraining: {epochs: 2, grad_accum: 1}\n")
    result = subprocess.run([*command, "--config", str(config)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "coord_probe" and metrics["display_name"] == "CoordProbe"
    assert metrics["label"] == "multimodal" and metrics["inputs"] == ["path", "coords", "omic_groups:pathways"]
    assert metrics["config"]["training"]["lr"] == 1e-3  # the plugin's own default, resolved and recorded
    log = pd.read_csv(out / "training_log.tsv", sep="\t")
    assert {"train_loss_surv", "train_loss_weight_penalty"} <= set(log.columns)
    assert (log["train_loss_weight_penalty"] > 0).all()
