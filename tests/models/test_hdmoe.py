"""HDMoE: reference parameter count, RFR is a permutation, evaluation modes, experts and routers learn."""

from __future__ import annotations

import pytest
import torch

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.hdmoe import HDMoE, recombine
from mmsurv.models.registry import resolve_model

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
TINY = dict(group_sizes=[3, 5, 4], path_dim=16, n_bins=4, gate_dim=32, omic_hidden=32, expert_hidden=16)



def test_parameter_count_equals_the_public_code_on_blca():
    model = build_model("hdmoe", ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS))
    assert n_params(model) == 8_625_188


@pytest.mark.parametrize("seg", [1, 2, 4, 8, 16, 32, 64, 128, 256])
def test_rfr_with_a_fixed_seg_is_a_permutation(seg):
    vectors = torch.arange(2 * 512, dtype=torch.float32).reshape(2, 512)
    out = recombine(vectors, seg)
    assert out.shape == (1024,)
    assert torch.equal(out.sort().values, vectors.reshape(-1))  # nothing lost, nothing duplicated


def test_rfr_interleaves_chunks_of_the_four_vectors():
    vectors = torch.arange(4 * 8, dtype=torch.float32).reshape(4, 8)
    tokens = recombine(vectors, 2).reshape(4, 8)
    # chunk 0 (4 values) of vectors 0 and 1 form token 0; chunk 0 of vectors 2 and 3 token 1; chunk 1 ...
    assert tokens[0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert tokens[2].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    assert torch.equal(recombine(vectors, 1).reshape(4, 8), vectors)


def _batch(model, seed):
    return model.example_batch(bag_size=10 + seed % 7, seed=seed)


def test_evaluation_modes_fixed_and_mean_are_repeatable_random_is_not():
    torch.manual_seed(0)
    model = HDMoE(**TINY).eval()
    batch = _batch(model, 1)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(batch).logits)
        model.rfr_eval = "mean"
        mean = model(batch).logits
        assert torch.equal(mean, model(batch).logits)
        model.rfr_eval = "random"
        draws = torch.stack([model(batch).logits for _ in range(12)])
    assert (draws - draws[0]).abs().max() > 0, "the public behaviour draws seg at random in evaluation"
    with pytest.raises(ValueError, match="rfr_eval"):
        HDMoE(**TINY, rfr_eval="sometimes")


def test_loss_terms_decoupling_and_balance():
    torch.manual_seed(0)
    model = HDMoE(**TINY).train()
    batch = _batch(model, 2)
    terms = model.loss(model(batch), model.example_target())
    assert set(terms) == {"surv", "decouple_fusion", "decouple_orth", "balance"}
    assert 0 <= float(terms["decouple_fusion"].detach()) <= 4 and -3 <= float(terms["decouple_orth"].detach()) <= 3
    # Switch balance loss N·Σ f·P ≥ 1 per MoE (equality only when perfectly balanced), × 0.01, 3 MoEs
    assert float(terms["balance"].detach()) >= 0.03 - 1e-6
    model.eval()
    assert "balance" not in model.loss(model(batch), model.example_target())


def test_every_routed_expert_and_every_router_receive_gradients_in_a_short_run():
    # Balance weight 0.1 instead of the paper's 0.01: at this tiny width, top-1 routing over a
    # patient's single token left one of 8 experts unvisited for 200 steps in 2 of 3 seeds; the
    # balance loss is what spreads the routing, and at 0.1 every expert is reached in < 35 steps.
    torch.manual_seed(0)
    model = HDMoE(**TINY, balance_weight=0.1).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    moes = {"omic": model.omic_moe, "path": model.path_moe, "fusion": model.fusion_moe}
    reached = {name: torch.zeros(len(moe.experts), dtype=torch.bool) for name, moe in moes.items()}
    router_grad = {name: False for name in moes}
    for step in range(60):
        batch = _batch(model, step)
        loss = sum(model.loss(model(batch), model.example_target(seed=step)).values())
        optimizer.zero_grad()
        loss.backward()
        for name, moe in moes.items():
            router_grad[name] |= bool(moe.router.grad.abs().sum() > 0)
            for index, expert in enumerate(moe.experts):
                grads = [p.grad for p in expert.parameters()]
                reached[name][index] |= any(g is not None and g.abs().sum() > 0 for g in grads)
        optimizer.step()
    assert all(router_grad.values()), router_grad
    assert all(bool(r.all()) for r in reached.values()), {k: v.tolist() for k, v in reached.items()}


def test_defaults_follow_the_run_script():
    training = HDMoE.defaults["training"]
    assert training["optimizer"] == "adam" and training["lr"] == 5e-4 and training["weight_decay"] == 1e-5
    assert training["epochs"] == 30 and training["grad_accum"] == 1 and training["batch_size"] == 1
    assert training["scheduler"] == "poly" and training["poly_power"] == 0.9  # engine.py: lr·(1 − e/E)^0.9 per epoch
    assert training["scheduler_interval"] == "epoch"


def test_a_config_variant_sets_the_evaluation_mode():
    variant = resolve_model("hdmoe_mean", {"hdmoe_mean": {"model": "hdmoe", "rfr_eval": "mean"}})
    model = variant.spec.builder(ModelInputs(omic_dim=12, group_sizes=[3, 5, 4], path_dim=16), **variant.params)
    assert model.rfr_eval == "mean"


@pytest.mark.parametrize(("switch", "terms", "experts", "shared"), [
    ({"first_level_moe": False}, {"surv", "decouple_fusion", "decouple_orth", "balance"}, (1, 1, 8), True),
    ({"fusion_moe": False}, {"surv", "decouple_fusion", "decouple_orth", "balance"}, (8, 8, 1), True),
    ({"rfr": False}, {"surv", "decouple_fusion", "decouple_orth", "balance"}, (8, 8, 8), True),
    ({"shared_experts": False}, {"surv", "decouple_fusion", "balance"}, (8, 8, 8), False),
])
def test_part_ablations_remove_their_part(switch, terms, experts, shared):
    torch.manual_seed(0)
    model = HDMoE(**TINY, **switch).train()
    assert (len(model.path_moe.experts), len(model.omic_moe.experts), len(model.fusion_moe.experts)) == experts
    assert (model.fusion_moe.shared is not None) == shared
    batch = _batch(model, 2)
    output = model(batch)
    assert set(model.loss(output, model.example_target())) == terms
    sum(model.loss(model(batch), model.example_target()).values()).backward()
    assert any(p.grad is not None for p in model.path_moe.experts.parameters())  # top-1: one expert per token
    if switch == {"rfr": False}:  # no recombination: the same logits whatever seg would have been drawn
        model.eval()
        model.rfr_eval = "random"
        with torch.no_grad():
            first, second = model(batch).logits, model(batch).logits
        assert torch.equal(first, second)


def test_the_default_model_is_unchanged_by_the_switches():
    torch.manual_seed(3)
    default = HDMoE(**TINY)
    torch.manual_seed(3)
    explicit = HDMoE(**TINY, first_level_moe=True, fusion_moe=True, rfr=True, shared_experts=True)
    assert default.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), explicit.state_dict().values()))


@pytest.mark.parametrize("first_level_moe", [True, False])
def test_routing_shares_are_reported_per_modality_and_for_the_fusion_moe(first_level_moe):
    torch.manual_seed(0)
    model = HDMoE(**TINY, first_level_moe=first_level_moe).eval()
    output = model(_batch(model, 1))
    probs = output.attention["router_fusion"]
    expected = {"route/fusion/layer1"} | ({"route/genomic/layer0", "route/wsi/layer0"} if first_level_moe else set())
    assert set(output.measures) == expected
    fusion = output.measures["route/fusion/layer1"]
    assert fusion.sum().item() == pytest.approx(1.0)
    assert torch.equal(fusion, torch.bincount(probs.argmax(-1), minlength=probs.shape[-1]).double() / probs.shape[0])
    if first_level_moe:
        chosen = int(output.attention["router_omic"].argmax(-1).reshape(-1)[0])
        assert output.measures["route/genomic/layer0"][chosen].item() == 1.0
