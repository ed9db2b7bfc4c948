"""PORPOISE AMIL: reference count and layout (no rho), Xavier init, attention pooling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsurv.models import ModelInputs, build_model, n_params


def test_parameter_count_and_layers_equal_the_official_code():
    torch.manual_seed(0)
    model = build_model("porpoise_amil", ModelInputs())
    assert n_params(model) == 789_765
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 512), (512, 256), (512, 256), (256, 1), (512, 4)]
    assert all(m.bias.abs().sum() == 0 for m in linears)
    first = linears[0].weight
    assert first.std().item() == pytest.approx((2 / (1024 + 512)) ** 0.5, rel=0.05)


def test_logits_are_the_classifier_of_the_attention_pooled_embedding():
    torch.manual_seed(0)
    model = build_model("porpoise_amil", ModelInputs(path_dim=8)).eval()
    batch = model.example_batch(bag_size=20)
    output = model(batch)
    h = model.fc(batch.one("path"))
    weights = torch.softmax(model.attention(h)[:, 0], dim=0)
    assert torch.allclose(output.attention["path"][0], weights, atol=1e-6)
    assert torch.allclose(output.logits[0], model.classifier(weights @ h), atol=1e-6)
