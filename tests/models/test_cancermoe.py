"""CancerMoE invariants: router and balance loss, expert gradients, DPS, ACS, training state."""

from __future__ import annotations

import math

import pytest
import torch

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.base import Batch, Target
from mmsurv.models.cancermoe import (
    CancerMoE,
    SparsifiedAttention,
    TopKMoE,
    bag_key,
    consolidation_matrix,
    cv_squared,
    kept_elements,
    kept_tokens,
    select_tokens,
)


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


# ------------------------------------------------------------------ router (the paper's eq. 2) and balance loss

def _gelu(x: float) -> float:
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


def test_router_is_top_k_of_the_softmax_of_an_mlp_without_renormalisation_or_noise():
    moe = TopKMoE(dim=2, hidden=8, n_experts=4, top_k=2, route_extra=1, router_hidden=2,
                  w_importance=0.1, w_load=0.2).train()  # training mode: no noise may enter
    first, second = moe.router[0], moe.router[2]
    w1, b1 = [[1.0, -1.0, 0.5], [0.5, 2.0, -1.0]], [0.1, -0.2]
    w2, b2 = [[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0], [0.5, 0.5]], [0.0, 0.3, 0.0, -0.1]
    with torch.no_grad():
        first.weight.copy_(torch.tensor(w1)), first.bias.copy_(torch.tensor(b1))
        second.weight.copy_(torch.tensor(w2)), second.bias.copy_(torch.tensor(b2))
    r = [[0.5, -1.0, 1.0], [2.0, 0.3, 0.0], [-0.7, 0.4, 1.0]]
    gates, importance, load = moe.route(torch.tensor(r))
    expected = []
    for x in r:  # g(x) = W2·GELU(W1·x + b1) + b2, then softmax over the 4 experts, then keep the top 2
        hidden = [_gelu(sum(w * v for w, v in zip(row, x)) + b) for row, b in zip(w1, b1)]
        logits = [sum(w * h for w, h in zip(row, hidden)) + b for row, b in zip(w2, b2)]
        z = [math.exp(v) for v in logits]
        probs = [v / sum(z) for v in z]
        top = sorted(range(4), key=lambda e: -probs[e])[:2]
        expected.append([probs[e] if e in top else 0.0 for e in range(4)])
    expected = torch.tensor(expected)
    assert torch.allclose(gates, expected, atol=1e-6)
    assert ((gates > 0).sum(1) == 2).all() and (gates.sum(1) < 1).all()  # kept probabilities, not renormalised
    assert torch.equal(moe.route(torch.tensor(r))[0], gates)  # deterministic in training: no noise
    assert torch.allclose(importance, expected.sum(0), atol=1e-6)
    assert load.tolist() == (expected > 0).sum(0).float().tolist()

    def cv2(v):
        mean = sum(v) / len(v)
        return sum((x - mean) ** 2 for x in v) / len(v) / mean ** 2

    target = 0.1 * cv2(expected.sum(0).tolist()) + 0.2 * cv2((expected > 0).sum(0).float().tolist())
    assert float(moe.balance_loss(importance, load).detach()) == pytest.approx(target, rel=1e-4)
    assert float(cv_squared(torch.tensor([1.0, 1.0, 1.0]))) == 0.0


def test_sparse_dispatch_equals_the_gate_weighted_dense_experts():
    torch.manual_seed(1)
    moe = TopKMoE(dim=6, hidden=12, n_experts=3, top_k=2).eval()
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
    for _ in range(6):
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
    assert all(seen[name].sum() > 0 for name in seen if name.startswith("router."))


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
    _visit(model, bags, omic, train=False)  # the loop evaluates after each epoch, then calls the hook
    model.on_epoch_end({"epoch": 1, "train_cindex": 0.6})
    _visit(model, bags, omic)
    assert model._epoch == 2 and model._cindex_history == [0.6] and not model._refreshing
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


def test_the_loop_tells_the_epochs_and_the_training_cindex(tmp_path):
    """``fit`` calls ``on_epoch_end`` once per epoch: the history is the loop's ``train_cindex`` column."""
    import numpy as np

    from mmsurv.train.loop import TrainConfig, fit

    class Sample:
        def __init__(self, index, generator):
            self.case_id, self.n_patches = f"P{index}", 40 + index
            self.inputs = {"path": torch.randn(40 + index, 16, generator=generator),
                           "omic": torch.randn(20, generator=generator)}
            self.label, self.censorship, self.time = index % 4, index % 2, float(5 + 3 * index)

    class Dataset(list):
        @property
        def class_labels(self):
            return np.array([sample.label for sample in self])

        @property
        def case_ids(self):
            return [sample.case_id for sample in self]

    generator = torch.Generator().manual_seed(3)
    train = Dataset(Sample(i, generator) for i in range(8))
    val = Dataset(Sample(i, generator) for i in range(8, 12))
    model = small()
    torch.manual_seed(0)
    result = fit(model, train, val, TrainConfig(epochs=3, grad_accum=1, batch_size=1, lr=1e-3), seed=0)
    assert model._epoch == 4
    assert model._cindex_history == pytest.approx([record["train_cindex"] for record in result.history], nan_ok=True)


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


def test_head_importance_is_michels_formula_on_head_outputs_with_the_cls_row():
    model = small(seed=3).train()
    generator = torch.Generator().manual_seed(4)
    bags = [torch.randn(50, 16, generator=generator), torch.randn(45, 16, generator=generator)]
    batch = batch_of(bags, torch.randn(2, 20, generator=generator))
    seen = []
    for layer in model.layers:
        original = layer.attn.track

        def spy(heads, original=original):
            heads.retain_grad()
            seen.append(heads)
            original(heads)

        layer.attn.track = spy
    output = model(batch)
    target = Target(torch.tensor([0, 2]), torch.zeros(2), torch.tensor([3.0, 9.0]))
    sum(model.loss(output, target).values()).backward()
    for layer, heads in zip(model.layers, seen):
        attn = layer.attn
        product = heads.detach() * heads.grad  # B×H×T×dh: rows are the query tokens, cls first
        expected = product.sum(dim=(2, 3)).abs().sum(0)
        assert torch.allclose(attn.importance_sum, expected, atol=1e-9) and float(attn.importance_count) == 2
        del layer.attn.track
    without_cls = (seen[0].detach() * seen[0].grad)[:, :, 1:].sum(dim=(2, 3)).abs().sum(0)
    assert not torch.allclose(without_cls, model.layers[0].attn.importance_sum)  # the cls row counts
    assert model.consolidating  # importance exists, epochs not tracked yet
    model._epoch = 2
    model.eval()
    with torch.no_grad():
        model(batch)
    mix = model.layers[-1].attn.last_mix
    assert mix.shape == (2, 8, 8) and torch.allclose(mix.sum(-1), torch.ones(2, 8))
    assert model.layers[0].attn.last_mix is not None  # the first layer consolidates too


def _largest_kept(attn: torch.Tensor, index: torch.Tensor) -> bool:
    """Every kept element of each head's flattened map is ≥ every element not kept."""
    flat = attn.flatten(1)
    smallest_kept = flat.gather(1, index).min(dim=1).values[:, None]
    return bool(((flat > smallest_kept).sum(1) <= index.shape[1]).all())


@pytest.mark.parametrize("n_wsi", [500, 3072, 10_000])
def test_first_layer_keeps_the_q_n_squared_largest_attention_elements(n_wsi):
    """Algorithm 1: k = round((q·N)²) elements per head, the largest of the whole map; share q² of N²."""
    k = kept_elements(n_wsi, 0.08)
    assert abs(k / n_wsi ** 2 - 0.08 ** 2) <= 0.5 / n_wsi ** 2  # rounding to the nearest integer
    assert k == {500: 1600, 3072: 60_398, 10_000: 640_000}[n_wsi]  # (40)², 245.76² = 60,397.66, (800)²
    heads = 1 if n_wsi == 10_000 else 2
    torch.manual_seed(n_wsi)
    length = 1 + 8 + n_wsi  # cls, 8 genomic tokens, N WSI tokens: Algorithm 1 flattens the whole map
    q, key, v = (torch.randn(heads, length, 2) for _ in range(3))
    out, cls_row, received, index = SparsifiedAttention.apply(q, key, v, k)
    assert index.shape == (heads, k) and all(row.unique().numel() == k for row in index)
    if n_wsi == 10_000:  # the selection rule itself is checked below on the two smaller maps (memory, time)
        return
    attn = torch.softmax(q @ key.transpose(-1, -2) / math.sqrt(2), dim=-1)
    assert _largest_kept(attn, index)
    sparse = torch.zeros_like(attn).flatten(1).scatter(1, index, attn.flatten(1).gather(1, index)).view_as(attn)
    assert torch.allclose(out, sparse @ v, atol=1e-5)  # A_sparse·V, no renormalisation
    assert torch.allclose(cls_row, attn[:, 0]) and torch.allclose(received, sparse.sum(dim=(0, 1)), atol=1e-4)
    model = small(n_tokens=n_wsi, keep_ratio=0.08, n_heads=heads, dim=8).eval()
    bag = torch.randn(n_wsi, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = model(batch_of([bag], torch.randn(1, 20)))
    assert output.attention["first_layer_kept_elements"].tolist() == [[k] * heads]
    assert int(output.attention["first_layer_kept_mask"].sum()) == kept_tokens(n_wsi, 0.08) == round(0.08 * n_wsi)


def test_sparsified_attention_gradients_equal_the_dense_masked_reference():
    torch.manual_seed(0)
    q, key, v = (torch.randn(3, 11, 4, dtype=torch.double, requires_grad=True) for _ in range(3))
    out = SparsifiedAttention.apply(q, key, v, 17)[0]
    attn = torch.softmax(q @ key.transpose(-1, -2) / 2.0, dim=-1)
    keep = torch.zeros(3, 121, dtype=torch.bool).scatter(1, attn.detach().flatten(1).topk(17).indices, True)
    reference = (attn * keep.view(3, 11, 11)) @ v
    weight = torch.randn_like(out)
    ours = torch.autograd.grad((out * weight).sum(), (q, key, v))
    theirs = torch.autograd.grad((reference * weight).sum(), (q, key, v))
    assert torch.allclose(out, reference, atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(ours, theirs))


def test_first_layer_filters_to_q_n_tokens_per_patient_whatever_the_bag_size():
    model = small(n_tokens=400, keep_ratio=0.25).train()
    generator = torch.Generator().manual_seed(5)
    bags = [torch.randn(120, 16, generator=generator), torch.randn(7, 16, generator=generator),
            torch.randn(1000, 16, generator=generator)]
    output = model(batch_of(bags, torch.randn(3, 20, generator=generator)))
    assert output.attention["first_layer_kept_mask"].sum(1).tolist() == [30, 2, 100]  # round(q·N), N = 120, 7, 400
    assert output.attention["first_layer_kept_elements"][:, 0].tolist() == [900, 3, 10_000]  # round((q·N)²)
    no_acs = small(acs=False).eval()
    with torch.no_grad():
        assert "first_layer_kept" not in no_acs(batch_of(bags, torch.randn(3, 20))).attention


# ------------------------------------------------------------------ ablations, sizes

@pytest.mark.parametrize("flags", [dict(selection="all"), dict(selection="fixed_random"), dict(selection="random"),
                                   dict(acs=False), dict(consolidation=False), dict(smoe=False),
                                   dict(genomics=False), dict(genomic_embedding="shared")])
def test_ablation_variants_train(flags):
    model = small(**flags).train()
    generator = torch.Generator().manual_seed(6)
    bags = [torch.randn(90, 16, generator=generator), torch.randn(20, 16, generator=generator)]
    output = model(batch_of(bags, torch.randn(2, 20, generator=generator)))
    terms = model.loss(output, Target(torch.tensor([1, 3]), torch.tensor([0.0, 1.0]), torch.tensor([4.0, 8.0])))
    assert ("balance" in terms) == flags.get("smoe", True)
    sum(terms.values()).backward()
    assert torch.isfinite(output.logits).all()
    expected = 90 if flags.get("selection") == "all" else 40
    assert output.attention["selection"].sum(1).tolist() == [expected, 20]


def _selected(model, bag, train):
    model.train(train)
    with torch.no_grad():
        model(batch_of([bag], torch.randn(1, 20)))
    return model._last_selections[0]


def test_without_dps_is_one_fixed_random_set_and_random_select_redraws_at_inference_too():
    bags = [torch.randn(200, 16, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    fixed = small(selection="fixed_random")
    first = _selected(fixed, bags[0], True)
    assert first.numel() == 40 and first.unique().numel() == 40
    assert torch.equal(first, _selected(fixed, bags[0], True)) and torch.equal(first, _selected(fixed, bags[0], False))
    assert not torch.equal(first, _selected(fixed, bags[1], True))  # another patient, another set
    assert not torch.equal(first, _selected(small(seed=9, selection="fixed_random"), bags[0], True))  # another seed
    assert not fixed._scores  # no token scores are kept
    random = small(selection="random")
    draws = [_selected(random, bags[0], False) for _ in range(3)]
    assert all(d.numel() == 40 for d in draws) and not torch.equal(draws[0], draws[1])  # random at inference too
    assert not torch.equal(_selected(random, bags[0], True), _selected(random, bags[0], True))


def test_parameter_count_formula():
    model = build_model("cancermoe", ModelInputs(omic_dim=3062, group_sizes=[3062]))
    chunk = -(-3062 // 8)  # 8 genomic tokens of ⌈G/8⌉ values, each with its own Linear(chunk → 32)
    router = (35 * 32 + 32) + (32 * 4 + 4)  # g: Linear(d + 3 → 32), GELU, Linear(32 → 4 experts)
    assert n_params(model) == 32_832 + 8 * (32 * chunk + 32) + 13_124 + router == 145_544
    assert n_params(build_model("cancermoe", ModelInputs(omic_dim=3062, group_sizes=[3062]), {"smoe": False})) == \
        n_params(model) - router
    brca = build_model("cancermoe", ModelInputs(omic_dim=20_980, group_sizes=[20_980]))
    assert n_params(brca) == 32_832 + 8 * (32 * 2623 + 32) + 13_124 + router == 718_984  # the paper: 0.446 M


# ------------------------------------------------------------------ Figure 4b: gradient conflict

def _train_steps(model: CancerMoE, steps: int, epoch_every: int = 0) -> list[dict]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(7)  # DPS and dropout draw from the global generator
    target = Target(torch.tensor([1, 3, 0]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([4.0, 8.0, 2.0]))
    measured = []
    for step in range(steps):
        bags = [torch.randn(n, 16, generator=generator) for n in (70, 30, 50)]
        output = model(batch_of(bags, torch.randn(3, 20, generator=generator)))
        terms = model.loss(output, target)
        measured.append({k: float(v) for k, v in output.measures.items() if k.startswith("grad_conflict")})
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
        if epoch_every and (step + 1) % epoch_every == 0:
            model.on_epoch_end({"train_cindex": 0.6})
    return measured


@pytest.mark.parametrize("smoe", [True, False])
def test_gradient_conflict_is_measured_on_schedule_and_changes_nothing_in_training(smoe):
    plain = small(seed=2, smoe=smoe, dropout=0.1).train()
    measured = small(seed=2, smoe=smoe, dropout=0.1, conflict_every=2).train()
    assert all(not m for m in _train_steps(plain, 5, epoch_every=3))
    cosines = _train_steps(measured, 5, epoch_every=3)
    # steps 0 and 2 of the first epoch, step 0 of the second (the schedule restarts with the epoch)
    assert [bool(m) for m in cosines] == [True, False, True, True, False]
    assert all(-1.0 <= m["grad_conflict/last"] <= 1.0 for m in cosines if m)
    for (name, a), b in zip(plain.state_dict().items(), measured.state_dict().values()):
        assert torch.equal(a, b), name  # parameters, head importance, DPS scores: all identical
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in measured.parameters())


def test_gradient_conflict_is_the_cosine_of_the_unimodal_gradients_of_the_dense_mlp():
    model = small(seed=4, smoe=False, acs=False).train()
    generator = torch.Generator().manual_seed(5)
    bags = [torch.randn(30, 16, generator=generator), torch.randn(25, 16, generator=generator)]
    omic = torch.randn(2, 20, generator=generator)
    target = Target(torch.tensor([1, 2]), torch.tensor([0.0, 1.0]), torch.tensor([4.0, 8.0]))
    batch = batch_of(bags, omic)
    model(batch)
    wsi, mask = model._pack(bags, model._last_selections)
    cosine = model.gradient_conflict(wsi, mask, omic, target)
    params = list(model.layers[-1].mlp.parameters())
    without_genomics = small(seed=4, smoe=False, acs=False, genomics=False).train()
    without_genomics.load_state_dict(model.state_dict(), strict=False)
    loss = model.survival_loss(without_genomics(batch), target)
    g_wsi = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(without_genomics.layers[-1].mlp.parameters()))])
    logits = model.encode(wsi[:, :0], mask[:, :0], omic)[0]
    from mmsurv.models.base import ModelOutput
    g_gen = torch.cat([g.reshape(-1) for g in torch.autograd.grad(model.survival_loss(ModelOutput(logits=logits), target), params)])
    assert float(cosine) == pytest.approx(float(torch.nn.functional.cosine_similarity(g_wsi, g_gen, dim=0)), abs=1e-6)
    assert small(seed=4, genomics=False).gradient_conflict(wsi, mask, None, target) is None


def test_sparsity_measures_count_the_kept_elements_per_modality_block():
    from mmsurv.models.cancermoe import kept_blocks

    # L = 4 (cls, 1 genomic, 2 WSI), two heads keeping 2 elements each
    index = torch.tensor([[0 * 4 + 0, 2 * 4 + 3], [1 * 4 + 2, 3 * 4 + 2]])
    row = kept_blocks(index, length=4, fixed=2)
    assert row[0].item() == pytest.approx(2 / 16)
    blocks = row[1:10].reshape(3, 3)  # query modality × key modality: cls, genomic, WSI
    assert blocks[0, 0] == 0.25 and blocks[2, 2] == 0.5 and blocks[1, 2] == 0.25 and blocks.sum() == 1
    assert row[10:].reshape(3, 3)[2, 2].item() == pytest.approx(4 / 16)
    model = small(seed=1).eval()
    generator = torch.Generator().manual_seed(2)
    bags = [torch.randn(90, 16, generator=generator), torch.randn(30, 16, generator=generator)]
    measures = model(batch_of(bags, torch.randn(2, 20, generator=generator))).measures
    assert measures["sparsity/kept_blocks"].sum().item() == pytest.approx(1.0)
    assert measures["sparsity/block_area"].sum().item() == pytest.approx(1.0)
    assert 0 < measures["sparsity/kept_fraction"].item() < 1
    assert "sparsity/kept_fraction" not in small(seed=1, acs=False).eval()(batch_of(bags, torch.randn(2, 20))).measures
