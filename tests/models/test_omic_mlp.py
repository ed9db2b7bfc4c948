"""OmicMLP: SurvPath's MLPOmics count and layout, batch independence."""

from __future__ import annotations

import torch
from torch import nn

from mmsurv.models import ModelInputs, build_model, model_spec, n_params


def test_parameter_count_and_layers_equal_survpath():
    model = build_model("omic_mlp", ModelInputs(omic_dim=3392))
    assert n_params(model) == 109_764
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3392, 32), (32, 32), (32, 4)]
    assert [type(m) for m in model.net] == [nn.Linear, nn.ReLU, nn.Dropout] * 2
    assert all(m.p == 0.25 for m in model.net if isinstance(m, nn.Dropout))


def test_genomic_only_batchable_and_survpath_training_defaults():
    spec = model_spec("omic_mlp")
    assert spec.label == "genomic" and spec.model_class.batchable
    assert spec.defaults["training"]["optimizer"] == "radam" and spec.defaults["training"]["lr"] == 5e-4


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = build_model("omic_mlp", ModelInputs(omic_dim=20))
    batch = model.example_batch(batch_size=4)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(batch).logits)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(batch).logits, model(batch).logits)
