"""CancerMoE invariants: router and balance loss, expert gradients, DPS, ACS, training state."""

from __future__ import annotations

import math

import pytest
import torch

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.base import Batch, Target
from mmsurv.models.cancermoe import (CancerMoE, NoisyTopKMoE, bag_key, consolidation_matrix, cv_squared,
                                     select_tokens)


@pytest.fixture(autouse=True, scope="module")
def _single_thread_module():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


SMALL = dict(path_dim=16, omic_dim=20, n_bins=4)


def small(seed: int = 0, **params) -> CancerMoE:
    torch.manual_seed(seed)
    settings = dict(n_tokens=40, keep_ratio=0.25, n_key_tokens=2, dropout=0.0)
    settings.update(params)
    return CancerMoE(**SMALL, **settings)


def batch_of(bags: list[torch.Tensor], omic: torch.Tensor) -> Batch:
    longest = max(len(bag) for bag in bags)
    path = torch.zeros(len(bags), longest, bags[0].shape[1])
    mask = torch.zeros(len(bags), longest, dtype=torch.bool)
    for row, bag in enumerate(bags):
        path[row, :len(bag)] = bag
        mask[row, :len(bag)] = True
    return Batch(values={"path": path, "omic": omic}, mask=mask, size=len(bags))


# ------------------------------------------------------------------ router and balance loss

def test_router_top_k_and_balance_loss_match_hand_computation():
    torch.manual_seed(0)
    moe = NoisyTopKMoE(dim=4, hidden=8, n_experts=4, top_k=2, route_extra=3, w_importance=0.1, w_load=0.2).eval()
    with torch.no_grad():
        moe.gate.weight.copy_(torch.randn(4, 7))
        moe.noise.weight.copy_(torch.randn(4, 7) * 0.3)
    r = torch.randn(5, 7)
    gates, importance, load = moe.route(r)
    with torch.no_grad():
        clean = r @ moe.gate.weight.t()
        std = torch.log1p(torch.exp(r @ moe.noise.weight.t())) + 1e-2
    expected_gates = torch.zeros(5, 4)
    expected_load = torch.zeros(4)
    for token in range(5):
        order = sorted(range(4), key=lambda e: -float(clean[token, e].detach()))
        top = order[:2]
        z = torch.exp(clean[token, top] - clean[token, top].max())
        expected_gates[token, top] = z / z.sum()
        for expert in range(4):  # Shazeer's P(x, i): compare with the k-th largest of the OTHER experts
            others = sorted((float(clean[token, e]) for e in range(4) if e != expert), reverse=True)
            threshold = others[1]
            x = (float(clean[token, expert]) - threshold) / float(std[token, expert])
            expected_load[expert] += 0.5 * (1 + math.erf(x / math.sqrt(2)))
    assert torch.allclose(gates, expected_gates, atol=1e-6)
    assert ((gates > 0).sum(1) == 2).all() and torch.allclose(gates.sum(1), torch.ones(5))
    assert torch.allclose(importance, expected_gates.sum(0), atol=1e-6)
    assert torch.allclose(load, expected_load, atol=1e-5)

    def cv2(v):
        mean = sum(v) / len(v)
        return sum((x - mean) ** 2 for x in v) / len(v) / mean ** 2

    expected = 0.1 * cv2(expected_gates.sum(0).tolist()) + 0.2 * cv2(expected_load.tolist())
    assert float(moe.balance_loss(importance, load).detach()) == pytest.approx(expected, rel=1e-4)
    assert float(cv_squared(torch.tensor([1.0, 1.0, 1.0]))) == 0.0


def test_sparse_dispatch_equals_the_gate_weighted_dense_experts():
    torch.manual_seed(1)
    moe = NoisyTopKMoE(dim=6, hidden=12, n_experts=3, top_k=2).eval()
    with torch.no_grad():
        moe.gate.weight.normal_()
    x, modality = torch.randn(9, 6), torch.randint(0, 3, (9,))
    out, gates, _ = moe(x, modality)
    experts = [torch.nn.functional.gelu(x @ moe.w_in[e] + moe.b_in[e]) @ moe.w_out[e] for e in range(3)]
    dense = sum(gates[:, e:e + 1] * experts[e] for e in range(3)) + moe.b_out
    assert torch.allclose(out, dense, atol=1e-6)


def test_every_expert_and_the_router_get_gradients_over_a_training_run():
    model = small(seed=2, n_experts=4, top_k=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    moe = model.layers[-1].mlp
    seen = {name: torch.zeros_like(p) for name, p in moe.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    for step in range(6):
        bags = [torch.randn(int(n), 16, generator=generator) for n in torch.randint(10, 60, (4,), generator=generator)]
        batch = batch_of(bags, torch.randn(4, 20, generator=generator))
        target = Target(torch.randint(0, 4, (4,), generator=generator), torch.zeros(4), torch.rand(4) * 50)
        output = model(batch)
        loss = sum(model.loss(output, target).values())
        optimizer.zero_grad()
        loss.backward()
        for name, p in moe.named_parameters():
            seen[name] += p.grad.abs()
        optimizer.step()
    for expert in range(4):
        assert seen["w_in"][expert].sum() > 0 and seen["w_out"][expert].sum() > 0, f"expert {expert} never trained"
    assert (seen["gate.weight"].sum(1) > 0).all() and (seen["noise.weight"].sum(1) > 0).all()


# ------------------------------------------------------------------ dynamic patch selection

def test_dps_selects_exactly_n_distinct_tokens_with_key_neighbourhoods():
    torch.manual_seed(0)
    n, n_tokens = 1000, 96
    positions = torch.arange(0, 1000, 7)
    scores = torch.rand(len(positions))
    stored = (positions, scores)
    keys = positions[scores.topk(4).indices]
    for random in (True, False):
        chosen = select_tokens(n, n_tokens, stored, n_key=4, p_random=0.5, random=random)
        assert chosen.numel() == n_tokens and chosen.unique().numel() == n_tokens
        assert chosen.min() >= 0 and chosen.max() < n
        for key in keys.tolist():  # a window of 2·N(1−p)/(2b) = 12 consecutive rows around each key
            start = min(max(key - 6, 0), n - 12)
            assert set(range(start, start + 12)) <= set(chosen.tolist())
    first = select_tokens(n, n_tokens, None, n_key=4, p_random=0.5, random=True)
    assert first.numel() == n_tokens and first.unique().numel() == n_tokens
    even = select_tokens(n, n_tokens, None, n_key=4, p_random=0.5, random=False)
    assert torch.equal(even, select_tokens(n, n_tokens, None, n_key=4, p_random=0.5, random=False))


def test_a_bag_smaller_than_n_uses_every_real_row_and_never_padding():
    model = small(n_tokens=40).train()
    generator = torch.Generator().manual_seed(3)
    bags = [torch.randn(25, 16, generator=generator), torch.randn(70, 16, generator=generator)]
    output = model(batch_of(bags, torch.randn(2, 20, generator=generator)))
    selection = output.attention["selection"]
    assert selection.sum(1).tolist() == [25, 40]  # all 25 rows of the small bag, exactly N of the large one
    stored_small = model._scores[bag_key(bags[0])][0]
    stored_large = model._scores[bag_key(bags[1])][0]
    assert torch.equal(stored_small, torch.arange(25))
    assert stored_large.numel() == 40 and stored_large.unique().numel() == 40 and stored_large.max() < 70


def test_same_seed_same_selection_and_numbers():
    def run(seed):
        model = small(seed=0)
        torch.manual_seed(seed)
        bags = [torch.randn(90, 16, generator=torch.Generator().manual_seed(5))]
        batch = batch_of(bags, torch.randn(1, 20, generator=torch.Generator().manual_seed(6)))
        first = model(batch)
        second = model(batch)  # second visit: key tokens from the stored scores
        return first.attention["selection"], model._scores[bag_key(bags[0])][0], second.logits

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[1], c[1])


def test_evaluation_selection_is_deterministic_and_scores_unseen_patients():
    model = small(seed=1).eval()
    bag = torch.randn(200, 16, generator=torch.Generator().manual_seed(2))
    batch = batch_of([bag], torch.randn(1, 20))
    with torch.no_grad():
        first, second = model(batch), model(batch)
    assert torch.equal(first.logits, second.logits)
    assert int(first.attention["selection"].sum()) == 40
    assert bag_key(bag) not in model._scores  # evaluation never writes the training state


# ------------------------------------------------------------------ epochs, refresh, checkpoint state

def _visit(model, bags, omic, train=True):
    model.train(train)
    output = model(batch_of(bags, omic))
    if train:
        target = Target(torch.zeros(len(bags), dtype=torch.long), torch.zeros(len(bags)),
                        torch.tensor([float(len(bag)) for bag in bags]))
        model.loss(output, target)
    return output


def test_refresh_policies_follow_the_training_cindex_and_epochs():
    generator = torch.Generator().manual_seed(0)
    bags = [torch.randn(60 + i, 16, generator=generator) for i in range(3)]
    omic = torch.randn(3, 20, generator=generator)
    model = small()
    _visit(model, bags, omic)
    assert model._epoch == 1 and model._refreshing
    _visit(model, bags, omic, train=False)  # the loop evaluates after each epoch
    _visit(model, bags, omic)
    assert model._epoch == 2 and len(model._cindex_history) == 1 and not model._refreshing
    model._cindex_history = [0.7, 0.6]
    assert model.refresh_decision()  # the training c-index dropped
    model._cindex_history = [0.6, 0.7]
    assert not model.refresh_decision()
    every = small(refresh="every_n", refresh_every=3)
    decisions = []
    for epoch in range(1, 8):
        every._epoch = epoch
        decisions.append(every.refresh_decision())
    assert decisions == [True, False, False, True, False, False, True]
    assert small(refresh="epoch").refresh_decision()


def test_scores_stay_fixed_unless_refreshing_and_travel_with_the_state_dict():
    generator = torch.Generator().manual_seed(1)
    bags = [torch.randn(80, 16, generator=generator)]
    omic = torch.randn(1, 20, generator=generator)
    model = small()
    _visit(model, bags, omic)
    key = bag_key(bags[0])
    stored = model._scores[key]
    model._refreshing = False
    _visit(model, bags, omic)
    assert model._scores[key] is stored
    clone = small(seed=5)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone._scores[key][0], stored[0]) and clone._epoch == model._epoch
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # what the loop keeps as best_state
    assert state["_extra_state"].dtype == torch.uint8


def test_epochs_are_counted_from_patients_without_evaluation():
    generator = torch.Generator().manual_seed(2)
    bags = [torch.randn(30 + i, 16, generator=generator) for i in range(3)]
    omic = torch.randn(3, 20, generator=generator)
    model = small()
    for _ in range(2):
        for row in range(3):
            _visit(model, [bags[row]], omic[row:row + 1])
    assert model._epoch == 2 and len(model._cindex_history) == 1


# ------------------------------------------------------------------ attention consolidation and sparsification

def test_consolidation_weights_of_each_cluster_sum_to_one():
    torch.manual_seed(0)
    importance = torch.rand(8)
    probs = torch.softmax(torch.randn(8, 6, 6), dim=-1)
    assign, mix = consolidation_matrix(importance, probs, keep_heads=2)
    kept = importance.topk(2).indices
    assert set(assign.tolist()) <= set(kept.tolist()) and all(assign[h] == h for h in kept)
    for head in range(8):
        members = (assign == assign[head]).nonzero().squeeze(1)
        assert float(mix[head, members].sum()) == pytest.approx(1.0, abs=1e-6)
        assert float(mix[head].sum()) == pytest.approx(1.0, abs=1e-6)
        expected = torch.softmax(importance[members], dim=0)
        assert torch.allclose(mix[head, members], expected, atol=1e-6)


def test_head_importance_hook_equals_michel_formula_and_consolidation_runs():
    model = small(seed=3).train()
    generator = torch.Generator().manual_seed(4)
    bags = [torch.randn(50, 16, generator=generator), torch.randn(45, 16, generator=generator)]
    batch = batch_of(bags, torch.randn(2, 20, generator=generator))
    probs_seen = []
    attn = model.layers[-1].attn
    original = attn.explicit

    def spy(*args, **kwargs):
        out, probs = original(*args, **kwargs)
        probs.retain_grad()
        probs_seen.append(probs)
        return out, probs

    attn.explicit = spy
    output = model(batch)
    target = Target(torch.tensor([0, 2]), torch.zeros(2), torch.tensor([3.0, 9.0]))
    sum(model.loss(output, target).values()).backward()
    probs = probs_seen[0]
    expected = (probs.detach() * probs.grad).sum(dim=(2, 3)).abs().sum(0)
    assert torch.allclose(attn.importance_sum, expected, atol=1e-9) and float(attn.importance_count) == 2
    attn.explicit = original
    assert model.consolidating  # importance exists, epochs not tracked yet
    model._epoch = 2  # after an evaluation, consolidation waits for the second epoch
    model.eval()
    with torch.no_grad():
        model(batch)
    mix = attn.last_mix
    assert mix.shape == (2, 8, 8) and torch.allclose(mix.sum(-1), torch.ones(2, 8))


def test_first_layer_sparsification_keeps_exactly_qn_squared_elements():
    model = small(n_tokens=40, keep_ratio=0.25).eval()  # kq = 10
    generator = torch.Generator().manual_seed(5)
    bags = [torch.randn(120, 16, generator=generator), torch.randn(7, 16, generator=generator)]
    with torch.no_grad():
        output = model(batch_of(bags, torch.randn(2, 20, generator=generator)))
    block = output.attention["first_layer_wsi"]
    assert block.shape == (2, 10, 10)
    assert int((block[0] > 0).sum()) == 10 * 10  # exactly (qN)² WSI×WSI elements kept
    assert int((block[1] > 0).sum()) == 7 * 7  # a bag with fewer real rows than qN keeps them all
    no_acs = small(acs=False).eval()
    with torch.no_grad():
        assert "first_layer_wsi" not in no_acs(batch_of(bags, torch.randn(2, 20))).attention


# ------------------------------------------------------------------ ablations, sizes

@pytest.mark.parametrize("flags", [dict(dps=False), dict(acs=False), dict(smoe=False), dict(genomics=False),
                                   dict(random_selection=True), dict(genomic_embedding="shared")])
def test_ablation_variants_train(flags):
    model = small(**flags).train()
    generator = torch.Generator().manual_seed(6)
    bags = [torch.randn(90, 16, generator=generator), torch.randn(20, 16, generator=generator)]
    output = model(batch_of(bags, torch.randn(2, 20, generator=generator)))
    terms = model.loss(output, Target(torch.tensor([1, 3]), torch.tensor([0.0, 1.0]), torch.tensor([4.0, 8.0])))
    assert ("balance" in terms) == flags.get("smoe", True)
    sum(terms.values()).backward()
    assert torch.isfinite(output.logits).all()
    expected = 90 if flags.get("dps") is False else 40
    assert output.attention["selection"].sum(1).tolist() == [expected, 20]


def test_parameter_count_formula():
    model = build_model("cancermoe", ModelInputs(omic_dim=3062, group_sizes=[3062]))
    chunk = -(-3062 // 8)  # 8 genomic tokens of ⌈G/8⌉ values, each with its own Linear(chunk → 32)
    assert n_params(model) == 32_832 + 8 * (32 * chunk + 32) + 13_124 + 280 == 144_540
    assert n_params(build_model("cancermoe", ModelInputs(omic_dim=3062, group_sizes=[3062]), {"smoe": False})) == \
        n_params(model) - 280
