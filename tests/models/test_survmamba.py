"""SurvMamba: the selective scan equals the naive recurrence, regions and processes, Bi-Mamba padding, variants."""

from __future__ import annotations

import csv

import pytest
import torch

from mmsurv.data.pathways import read_gene_sets
from mmsurv.models import Batch, ModelInputs, build_model, n_params
from mmsurv.models.survmamba import (DEFAULT_HIERARCHY, BiMamba, build_hierarchy, function_processes, linear_scan,
                                     read_hierarchy, region_groups, selective_scan, selective_scan_reference)
from mmsurv.resources import default_pathways
from mmsurv.train.run import resolve_settings

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
TINY = dict(dim=16, d_state=4)



def scan_inputs(batch, length, inner, state, seed=0, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, inner, generator=generator)
    delta = torch.nn.functional.softplus(torch.randn(batch, length, inner, generator=generator) * scale - 2)
    A = -torch.exp(torch.randn(inner, state, generator=generator))
    B = torch.randn(batch, length, state, generator=generator)
    C = torch.randn(batch, length, state, generator=generator)
    return [t.requires_grad_() for t in (x, delta, A, B, C)]


def close(ours, reference, tol=1e-5):
    """max |ours − reference| within tol of the reference's scale (float32)."""
    ours, reference = ours.detach(), reference.detach()
    return float((ours - reference).abs().max()) <= tol * max(1.0, float(reference.abs().max()))


@pytest.mark.parametrize("length, batch, inner, state, tile", [
    (1, 2, 3, 4, None), (7, 2, 3, 4, None), (64, 2, 5, 4, None), (64, 3, 5, 4, 400),
    (4097, 1, 3, 2, None), (4097, 2, 3, 2, 3000), (50_000, 1, 2, 2, None)])
def test_scan_equals_naive_recurrence_forward_and_gradients(length, batch, inner, state, tile):
    inputs = scan_inputs(batch, length, inner, state)
    kwargs = {} if tile is None else {"tile_elements": tile}
    ours = selective_scan(*inputs, **kwargs)
    reference = selective_scan_reference(*inputs)
    assert ours.shape == (batch, length, inner) and close(ours, reference)
    weights = torch.randn(ours.shape, generator=torch.Generator().manual_seed(1))
    ours_grads = torch.autograd.grad((ours * weights).sum(), inputs, materialize_grads=True)
    reference_grads = torch.autograd.grad((reference * weights).sum(), inputs, materialize_grads=True)
    for name, a, b in zip("x delta A B C".split(), ours_grads, reference_grads):
        assert close(a, b), f"gradient of {name} differs"


def test_scan_is_exact_under_strong_decay_and_with_an_initial_state():
    decay = torch.rand(300, 2, 3) ** 8  # cumulative decays underflow: dividing by them would overflow
    decay[::17] = 0.0
    inputs = torch.randn(300, 2, 3)
    initial = torch.randn(2, 3)
    state, expected = initial, []
    for t in range(300):
        state = decay[t] * state + inputs[t]
        expected.append(state)
    ours = linear_scan(torch.log(decay), inputs, initial)  # log 0 = -inf: a full reset
    assert torch.isfinite(ours).all() and torch.allclose(ours, torch.stack(expected), atol=1e-5, rtol=1e-5)


def grid(x0, y0, nx, ny, step=512):
    return torch.tensor([[x0 + i * step, y0 + j * step] for j in range(ny) for i in range(nx)])


def test_one_4096px_region_is_one_group_and_neighbours_split():
    coords = grid(8192, 4096, 8, 8)  # exactly one 4096 px region of 512 px patches
    order, group = region_groups(coords[torch.randperm(64)])
    assert group.tolist() == [0] * 64
    two = torch.cat([grid(0, 0, 8, 8), grid(4096, 0, 8, 8)])
    order, group = region_groups(two)
    assert torch.bincount(group).tolist() == [64, 64]
    assert set(order[group == 0].tolist()) == set(range(64))
    at_40x = grid(0, 0, 8, 8, step=1024)  # 1024 px footprints of a 40x slide: the same 8 x 8 region
    assert region_groups(at_40x)[1].unique().tolist() == [0]
    rows = region_groups(grid(0, 0, 16, 8))
    assert torch.bincount(rows[1]).tolist() == [64, 64]


def test_regions_never_mix_slides():
    coords = torch.cat([grid(0, 0, 4, 4), grid(0, 0, 4, 4)])  # the same positions on two slides
    slides = torch.tensor([0] * 16 + [1] * 16)
    order, group = region_groups(coords, slides)
    assert torch.bincount(group).tolist() == [16, 16]
    for g in (0, 1):
        assert slides[order[group == g]].unique().numel() == 1


def test_missing_coordinates_are_a_clear_error():
    model = build_model("survmamba", ModelInputs(group_sizes=[3, 4], path_dim=8), TINY)
    batch = model.example_batch(bag_size=5)
    del batch.values["coords"]
    with pytest.raises(ValueError, match="no patch coordinates"):
        model(batch)
    with pytest.raises(ValueError, match="missing"):
        region_groups(torch.tensor([[0.0, float("nan")]]))


def test_output_does_not_depend_on_bag_row_order():
    torch.manual_seed(0)
    model = build_model("survmamba", ModelInputs(group_sizes=[3, 4, 2], path_dim=8), TINY).eval()
    batch = model.example_batch(bag_size=150)
    permutation = torch.randperm(150)
    shuffled = Batch(values={**batch.values, "path": batch["path"][:, permutation],
                             "coords": batch["coords"][:, permutation]}, size=1)
    with torch.no_grad():
        assert torch.allclose(model(batch).logits, model(shuffled).logits, atol=1e-5)


def test_bimamba_padding_never_reaches_real_tokens_and_backward_direction_sees_the_future():
    torch.manual_seed(0)
    layer = BiMamba(8, d_state=4).eval()
    short, long = torch.randn(1, 5, 8), torch.randn(1, 9, 8)
    padded = torch.cat([torch.cat([short, torch.full((1, 4, 8), 7.0)], dim=1), long])
    with torch.no_grad():
        together = layer(padded, torch.tensor([5, 9]))
        assert torch.allclose(together[0, :5], layer(short)[0], atol=1e-5)
        assert torch.allclose(together[1], layer(long)[0], atol=1e-5)
        changed = long.clone()
        changed[0, -1] = torch.randn(8)  # (a constant shift would vanish in the LayerNorm)
        assert not torch.allclose(layer(changed)[0, 0], layer(long)[0, 0])  # token 0 sees the last token
        forward_only = BiMamba(8, d_state=4, bidirectional=False).eval()
        assert torch.allclose(forward_only(changed)[0, :-1], forward_only(long)[0, :-1])


def test_shipped_hierarchy_is_the_deterministic_overlap_grouping():
    rows = build_hierarchy(read_gene_sets(default_pathways()), 42)
    with open(DEFAULT_HIERARCHY, newline="") as handle:
        shipped = [(row["process"], row["function"]) for row in csv.DictReader(handle)]
    assert rows == shipped
    mapping = read_hierarchy(DEFAULT_HIERARCHY)
    assert len(mapping) == 331 and len(set(mapping.values())) == 42


def test_processes_from_names_index_fallback_and_user_csv(tmp_path):
    names = list(read_hierarchy(DEFAULT_HIERARCHY))[:20]
    mapping = read_hierarchy(DEFAULT_HIERARCHY)
    by_name = function_processes(names, 20, "default")
    same = [(a, b) for a in range(20) for b in range(20) if mapping[names[a]] == mapping[names[b]]]
    assert all(by_name[a] == by_name[b] for a, b in same)
    assert function_processes([], 16, "default") == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert function_processes([], 6, "default") == [0, 0, 1, 1, 2, 2]
    mixed = function_processes(names[:3] + ["UNKNOWN_A", "UNKNOWN_B", "UNKNOWN_C", "UNKNOWN_D"], 7, "default")
    assert mixed[3] == mixed[4] < mixed[5] == mixed[6] and mixed[3] > max(mixed[:3])
    path = tmp_path / "mine.csv"
    path.write_text("process,function\nimmune,b\nimmune,c\ncycle,a\n")
    assert function_processes(["a", "b", "c"], 3, str(path)) == [1, 0, 0]
    with pytest.raises(ValueError, match="does not list 1"):
        function_processes(["a", "b", "z"], 3, str(path))
    model = build_model("survmamba", ModelInputs(group_sizes=[2, 3, 4], group_names=["a", "b", "c"], path_dim=8),
                        {**TINY, "hierarchy": str(path)})
    assert model.n_processes == 2 and model.function_order.tolist() == [1, 2, 0]


def test_parameter_count_at_the_blca_setting_without_names():
    model = build_model("survmamba", ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS))
    assert n_params(model) == 17_896_965
    assert model.n_processes == 3


def test_variants_build_train_and_differ_in_size():
    inputs = ModelInputs(group_sizes=[3, 7, 5], path_dim=32)
    sizes = {}
    for name, flags in {"full": {}, "uni": {"bidirectional": False}, "no_him": {"use_him": False},
                        "no_ifm": {"use_ifm": False}, "fine": {"levels": "fine"}, "coarse": {"levels": "coarse"}}.items():
        torch.manual_seed(0)
        model = build_model("survmamba", inputs, {**TINY, **flags}).train()
        output = model(model.example_batch(bag_size=70))
        sum(model.loss(output, model.example_target()).values()).backward()
        assert torch.isfinite(output.logits).all()
        sizes[name] = n_params(model)
    assert sizes["full"] > sizes["uni"] and sizes["full"] > sizes["no_him"] and sizes["full"] > sizes["no_ifm"]
    assert sizes["full"] > sizes["fine"] and sizes["fine"] == sizes["coarse"]


def test_paper_defaults_and_a_config_variant_resolve():
    config = {"models": {"survmamba_uni": {"model": "survmamba", "bidirectional": False}}}
    data, training, resolved, _ = resolve_settings(config, "survmamba_uni")
    assert resolved.spec.name == "survmamba" and resolved.params == {"bidirectional": False}
    assert (training.optimizer, training.lr, training.weight_decay, training.batch_size) == ("radam", 2e-4, 5e-3, 1)
    assert data["groups"] == "pathways"


def test_recomputed_long_bag_path_gives_the_same_result_and_gradients():
    inputs = ModelInputs(group_sizes=[3, 7, 5], path_dim=16)
    results = []
    for checkpoint_tokens in (0, 40):  # 0: store everything; 40: level-1 slices and IFM blocks recomputed
        torch.manual_seed(0)
        model = build_model("survmamba", inputs, {**TINY, "dropout": 0.0, "checkpoint_tokens": checkpoint_tokens})
        batch = model.example_batch(bag_size=300)
        output = model(batch)
        sum(model.loss(output, model.example_target()).values()).backward()
        results.append((output.logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (logits_a, grads_a), (logits_b, grads_b) = results
    assert torch.allclose(logits_a, logits_b, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads_a, grads_b))
