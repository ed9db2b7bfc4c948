"""MOTCat: reference size, the transport plan against POT's solver, gradients, micro-batches."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.base import Target
from mmsurv.models.layers import mean_curve_logits, micro_batches
from mmsurv.models.motcat import transport_cost, uot_plan
from mmsurv.models.survival import nll_surv_loss

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
TINY = ModelInputs(omic_dim=50, group_sizes=[3, 7, 5], path_dim=32, n_bins=4)

torch.set_num_threads(1)


def small_model(**params):
    torch.manual_seed(0)
    return build_model("motcat", TINY, {"embed_dim": 32, "omic_hidden": [32, 32], "ff_dim": 64, **params})


def test_parameter_count_matches_reference_on_blca():
    model = build_model("motcat", ModelInputs(group_sizes=BLCA_GROUPS))
    assert n_params(model) == 4_228_870
    assert not any(isinstance(m, nn.MultiheadAttention) and m.embed_dim == 256 and m.num_heads == 1
                   for m in model.modules())  # MCAT's co-attention is gone (4,492,038 − 263,168)


def test_plan_equals_pots_numpy_solver():
    import ot

    generator = torch.Generator().manual_seed(0)
    patches, tokens = torch.randn(40, 8, generator=generator), torch.randn(3, 8, generator=generator)
    cost = transport_cost(patches, tokens)
    plan = uot_plan(cost.double(), reg=0.1, reg_m=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ot.unbalanced.sinkhorn_knopp_unbalanced(np.full(40, 1 / 40), np.full(3, 1 / 3),
                                                           cost.double().numpy(), 0.1, 0.5, reg_type="entropy")
    assert plan.shape == (40, 3) and np.abs(plan.numpy() - expected).max() < 1e-6
    # The reference's cost: squared distances of the min-shifted rows over their maximum.
    x = patches - patches.min(dim=1, keepdim=True).values
    y = tokens - tokens.min(dim=1, keepdim=True).values
    reference = torch.cdist(x, y) ** 2
    assert torch.allclose(cost, reference / reference.max(), atol=1e-5)
    # Unbalanced: the marginals are only approximately the uniform masses.
    assert not torch.allclose(plan.sum(dim=0), torch.full((3,), 1 / 3, dtype=plan.dtype), atol=1e-4)


def test_gradient_flows_through_the_plan_to_both_branches():
    for plan_grad in (True, False):
        model = small_model(plan_grad=plan_grad).train()
        batch = model.example_batch(bag_size=30)
        path = batch.one("path")
        groups = batch.one("omic_groups")
        h_path = model.path_fc(path)
        h_omic = torch.stack([encoder(group) for encoder, group in zip(model.omic_encoders, groups)])
        h_path.retain_grad()
        h_omic.retain_grad()
        plan = model.transport(h_path, h_omic)
        (plan.T @ h_path).pow(2).sum().backward()
        omic_grad = 0 if h_omic.grad is None else h_omic.grad.abs().sum()
        if plan_grad:
            assert plan.requires_grad and omic_grad > 0
        else:
            assert not plan.requires_grad and omic_grad == 0  # the reference: the plan is a constant
        assert h_path.grad.abs().sum() > 0
    model = small_model().train()
    output = model(model.example_batch(bag_size=70))
    sum(model.loss(output, model.example_target()).values()).backward()
    assert model.path_fc[0].weight.grad.abs().sum() > 0
    assert all(encoder[0][0].weight.grad.abs().sum() > 0 for encoder in model.omic_encoders)


def test_micro_batches_split_as_the_reference():
    chunks = micro_batches(1000, 256, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert [len(c) for c in chunks] == [250] * 4
    assert torch.equal(torch.sort(torch.cat(chunks)).values, torch.arange(1000))
    assert len(micro_batches(256, 256, None, torch.device("cpu"))) == 2  # n // bs + 1, as array_split there
    assert len(micro_batches(255, 256, None, torch.device("cpu"))) == 1


def test_loss_and_risk_are_means_over_micro_batches():
    model = small_model(bs_micro=8).train()
    batch = model.example_batch(bag_size=30)
    output = model(batch)
    chunks = output.chunk_logits
    assert chunks.shape == (4, 4)
    survival = torch.cumprod(torch.sigmoid(-chunks), dim=1)
    assert torch.allclose(output.risk, -survival.sum(dim=1).mean().reshape(1))
    assert torch.allclose(output.survival[0], survival.mean(dim=0), atol=1e-5)
    target = Target(torch.tensor([2]), torch.tensor([0.0]), torch.tensor([10.0]))
    per_chunk = [nll_surv_loss(torch.sigmoid(c[None]), survival[i][None], target.label, target.censorship)
                 for i, c in enumerate(chunks)]
    assert torch.allclose(model.loss(output, target)["surv"], torch.stack(per_chunk).mean())
    assert output.attention["coattn"].shape == (3, 30)


def test_mean_curve_logits_of_one_chunk_are_its_logits():
    logits = torch.randn(1, 4)
    assert torch.equal(mean_curve_logits(logits), logits)


def test_evaluation_is_deterministic_over_several_micro_batches():
    model = small_model(bs_micro=8).eval()
    batch = model.example_batch(bag_size=50)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(batch).logits)
