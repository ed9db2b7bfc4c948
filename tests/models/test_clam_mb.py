"""CLAM-MB: reference count, one attention branch and bag classifier per bin, instance loss on branch y."""

from __future__ import annotations

import pytest
import torch

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.base import Target
from mmsurv.models.clam_mb import CLAMMB
from mmsurv.models.clam_sb import INSTANCE_TERM


def small(seed: int = 0, **params) -> CLAMMB:
    torch.manual_seed(seed)
    return CLAMMB(path_dim=12, n_bins=4, hidden_dim=16, attention_dim=8, **params)


def test_parameter_count_equals_the_official_code():
    assert n_params(build_model("clam_mb", ModelInputs())) == 794_640


def test_each_bin_pools_its_own_slide_vector_and_has_its_own_classifier():
    model = small().eval()
    output = model(model.example_batch(bag_size=30))
    raw, h = output.attention_raw, output.features
    assert raw.shape == (4, 30) and output.attention["path"].shape == (4, 30)
    pooled = torch.softmax(raw, dim=1) @ h
    expected = torch.stack([model.classifier.weight[c] @ pooled[c] + model.classifier.bias[c] for c in range(4)])
    assert torch.allclose(output.logits[0], expected, atol=1e-6)


@pytest.mark.parametrize("label", [0, 3])
def test_instance_loss_takes_the_top_and_bottom_k_of_the_bins_own_branch(label):
    model = small().eval()
    calls = []
    model.instance_classifiers[label].register_forward_hook(lambda module, args, out: calls.append(args[0].detach()))
    output = model(model.example_batch(bag_size=40))
    terms = model.loss(output, Target(torch.tensor([label]), torch.tensor([0.0]), torch.tensor([3.0])))
    order = torch.argsort(output.attention_raw.detach()[label], descending=True)
    h = output.features.detach()
    assert len(calls) == 1 and calls[0].shape[0] == 16
    assert torch.equal(calls[0][:8], h[order[:8]]) and torch.equal(calls[0][8:], h[order[-8:].flip(0)])
    other = (label + 1) % 4
    other_order = torch.argsort(output.attention_raw.detach()[other], descending=True)
    assert not torch.equal(order[:8].sort().values, other_order[:8].sort().values)
    assert float(terms[INSTANCE_TERM].detach()) > 0
