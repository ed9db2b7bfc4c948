"""MoME: reference parameter count, router gradients (straight-through vs the public code), micro-batches."""

from __future__ import annotations

import pytest
import torch

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.mome import admin_omega

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
SMALL = ModelInputs(omic_dim=15, group_sizes=[3, 7, 5], path_dim=32, n_bins=4)



def small(seed=0, **params):
    torch.manual_seed(seed)
    return build_model("mome", SMALL, {"dim": 32, **params})


def router_grad_norms(model) -> list[float]:
    return [sum(float(p.grad.abs().sum()) for p in router.parameters() if p.grad is not None) for router in model.routers]


def test_parameter_count_equals_the_reference_with_fixed_tokens_as_buffers():
    # BearCleverProud/MoME MoMETransformer(n_bottlenecks=2, omic_sizes=BLCA), trainable parameters;
    # its bottleneck and class tokens are fixed random tensors: buffers here (learnable_tokens=False)
    inputs = ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS, path_dim=1024)
    model = build_model("mome", inputs)
    assert n_params(model) == 21_716_348
    assert sum(p.numel() for router in model.routers for p in router.parameters()) == 2_113_552
    buffers = dict(model.named_buffers())
    assert buffers["cls_token"].shape == (1, 1, 512)
    assert buffers["path_layer1.experts.1.bottleneck"].shape == (1, 2, 512)
    assert n_params(build_model("mome", inputs, {"learnable_tokens": True})) == 21_716_348 + 4 * 2 * 512 + 512


def test_admin_residual_scale():
    assert admin_omega(8) == pytest.approx(1.7595, abs=1e-4)


def test_router_gets_no_gradient_with_public_hard_routing():
    model = small(router_grad="none").train()
    batch, target = model.example_batch(bag_size=40), model.example_target()
    sum(model.loss(model(batch), target).values()).backward()
    assert router_grad_norms(model) == [0.0, 0.0, 0.0, 0.0]


def test_router_learns_with_straight_through():
    model = small(router_grad="straight_through").train()
    batch, target = model.example_batch(bag_size=40), model.example_target()
    sum(model.loss(model(batch), target).values()).backward()
    assert all(norm > 0 for norm in router_grad_norms(model))
    # down to each router's last layer (its gradients can be ~1e-9 at initialisation: too small for
    # one SGD step to move float32 weights, so the gradient itself is what is asserted)
    assert all(router.classifier.weight.grad.abs().sum() > 0 for router in model.routers)


def test_defaults_are_the_public_codes_router_and_landmarks():
    model = small()
    assert all(layer.router_grad == "none" for layer in model.mome_layers)
    assert all(not m.adaptive_landmarks for m in model.modules() if hasattr(m, "max_landmarks"))


def test_straight_through_keeps_the_hard_routing_forward():
    batch = small().example_batch(bag_size=40)
    with torch.no_grad():
        straight = small(router_grad="straight_through").eval()(batch)
        public = small(router_grad="none").eval()(batch)
    torch.testing.assert_close(straight.logits, public.logits)
    assert torch.equal(straight.attention["experts"], public.attention["experts"])


def test_micro_batches_split_the_bag_and_average_loss_and_risk():
    model = small(bs_micro=16).eval()
    batch, target = model.example_batch(bag_size=40), model.example_target()
    with torch.no_grad():
        output = model(batch)
    assert output.chunk_logits.shape == (40 // 16 + 1, 4)  # the reference's N // bs_micro + 1 chunks
    risk = -torch.cumprod(torch.sigmoid(-output.chunk_logits), dim=1).sum(dim=1)
    torch.testing.assert_close(output.risk, risk.mean().reshape(1))
    from mmsurv.models.survival import nll_surv_loss

    per_chunk = [nll_surv_loss(torch.sigmoid(row[None]), torch.cumprod(torch.sigmoid(-row[None]), dim=1),
                               target.label, target.censorship) for row in output.chunk_logits]
    torch.testing.assert_close(model.loss(output, target)["surv"], torch.stack(per_chunk).mean())


def test_checkpointed_chunks_give_the_same_gradients():
    grads = []
    for checkpointed in (True, False):
        model = small(bs_micro=16, checkpoint_chunks=checkpointed).train()
        batch, target = model.example_batch(bag_size=40), model.example_target()
        torch.manual_seed(5)
        sum(model.loss(model(batch), target).values()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_routing_shares_count_each_layers_choices_over_the_micro_batches():
    model = small(bs_micro=4).eval()
    output = model(model.example_batch(bag_size=10))
    experts = output.attention["experts"]  # chunks × 4 layers
    assert experts.shape[0] == 3
    for column, name in enumerate(("route/wsi/layer0", "route/genomic/layer0", "route/wsi/layer1",
                                   "route/genomic/layer1")):
        shares = output.measures[name]
        assert shares.sum().item() == pytest.approx(1.0)
        assert torch.equal(shares, torch.bincount(experts[:, column], minlength=4).double() / 3)
