"""Patch-GCN: reference size, per-slide kNN graph on coordinates (cached), disconnected slides, layers."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

import mmsurv.models.patch_gcn as module
from mmsurv.models import Batch, ModelInputs, build_model, n_params
from mmsurv.models.patch_gcn import PatchGCN, knn_edge_index, slide_knn

torch.set_num_threads(1)  # small sizes: one thread is fastest and reproducible


def two_slides(n0: int = 60, n1: int = 45, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float coordinates (no distance ties) of two slides over the same area, rows interleaved."""
    rng = np.random.default_rng(seed)
    coords = torch.tensor(rng.uniform(0, 10_000, (n0 + n1, 2)))
    slide = torch.tensor(rng.permutation(np.r_[np.zeros(n0), np.ones(n1)]).astype(np.int64))
    return coords, slide


def small(seed: int = 0, **params) -> PatchGCN:
    torch.manual_seed(seed)
    return PatchGCN(path_dim=16, hidden_dim=8, **params)


def test_parameter_count_matches_the_reference():
    net = build_model("patch_gcn", ModelInputs(omic_dim=3392, group_sizes=[94, 334, 521, 468, 1496, 479]))
    assert n_params(net) == 1_383_304  # torch-geometric 2.8 (1,384,456 with 1.6.3: MLP biases)
    assert len(net.layers) == 3 and net.path_phi[0].in_features == 512 and net.classifier.out_features == 4
    conv = net.layers[0].conv
    assert conv.aggr == "softmax" and conv.aggr_module.learn and conv.aggr_module.t.item() == 1.0
    assert [layer.block for layer in net.layers] == ["res"] * 3


def test_knn_edges_stay_inside_slides_and_are_the_k_nearest():
    coords, slide = two_slides()
    edges = knn_edge_index(coords, slide, k=8)
    source, target = edges.numpy()
    assert edges.dtype == torch.long and edges.shape == (2, 8 * 105)
    assert np.all(np.bincount(source, minlength=105) == 8)  # every patch has k neighbours
    assert np.all(slide.numpy()[source] == slide.numpy()[target])  # no edge crosses slides
    assert not np.any(source == target)
    xy, s = coords.numpy(), slide.numpy()
    for node in range(105):
        same = np.flatnonzero((s == s[node]) & (np.arange(105) != node))
        nearest = same[np.argsort(np.linalg.norm(xy[same] - xy[node], axis=1))[:8]]
        assert set(target[source == node]) == set(nearest)


def test_edge_direction_follows_the_reference_and_is_not_symmetrised():
    coords = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    edges = knn_edge_index(coords, torch.zeros(3, dtype=torch.long), k=1)
    assert edges.tolist() == [[0, 1, 2], [1, 0, 1]]  # [patch; its nearest]: 2 → 1 but not 1 → 2


def test_grid_interior_has_the_eight_adjacent_patches():
    side = 12
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="xy"), -1).reshape(-1, 2) * 512
    source, target = knn_edge_index(grid, torch.zeros(side * side, dtype=torch.long), k=8).numpy()
    g = grid.numpy()
    steps_in = np.minimum(g, 512 * (side - 1) - g).min(axis=1) // 512  # steps to the nearest border
    for node in np.flatnonzero(steps_in >= 1):
        steps = np.abs(g[target[source == node]] - g[node]) // 512
        assert steps.max() == 1 and len(steps) == 8
    for node in np.flatnonzero(steps_in >= 3):  # border patches reach up to 2 steps in: symmetric deeper
        assert np.sum(target == node) == 8


def test_small_slides_and_duplicates():
    assert slide_knn(np.zeros((1, 2)), 8).shape == (1, 0)  # one patch: no edge
    assert sorted(slide_knn(np.array([[0, 0], [5, 5], [9, 9]]), 8)[0].tolist()) == [1, 2]  # ≤ k: all others
    duplicates = slide_knn(np.zeros((12, 2)), 8)  # the query may hit another copy first: never itself
    assert duplicates.shape == (12, 8) and not np.any(duplicates == np.arange(12)[:, None])
    assert knn_edge_index(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)).shape == (2, 0)


def test_graph_cache_per_slide(monkeypatch):
    calls = []
    real = module.slide_knn
    monkeypatch.setattr(module, "slide_knn", lambda points, k: calls.append(len(points)) or real(points, k))
    coords, slide = two_slides()
    cache = OrderedDict()
    first = knn_edge_index(coords, slide, 8, cache)
    assert sorted(calls) == [45, 60] and len(cache) == 2
    assert torch.equal(knn_edge_index(coords, slide, 8, cache), first) and len(calls) == 2
    moved = coords.clone()
    moved[slide == 1] += 7.0  # only slide 1 changes: one rebuild
    knn_edge_index(moved, slide, 8, cache)
    assert len(calls) == 3 and calls[-1] == 45
    knn_edge_index(coords, slide, 4, cache)  # another k is another graph
    assert len(calls) == 5


def test_slides_are_disconnected_components():
    net = small().eval()
    coords, slide = two_slides()
    path = torch.randn(105, 16)
    edges = net.graph(coords, slide)
    other = path.clone()
    other[slide == 1] = torch.randn(int((slide == 1).sum()), 16)
    with torch.no_grad():
        a, b = net.node_embeddings(path, edges), net.node_embeddings(other, edges)
    assert torch.allclose(a[slide == 0], b[slide == 0], atol=1e-6)
    assert not torch.allclose(a[slide == 1], b[slide == 1])
    with torch.no_grad():  # message passing does reach neighbours within a slide
        c = net.node_embeddings(path, torch.zeros(2, 0, dtype=torch.long))
    assert not torch.allclose(a, c)


def test_forward_backward_and_the_unused_first_norm():
    net = small().train()
    coords, slide = two_slides()
    out = net(Batch.single(path=torch.randn(105, 16), coords=coords, slide_index=slide))
    assert out.logits.shape == (1, 4) and out.attention["path"].shape == (1, 105)
    out.logits.sum().backward()
    assert net.layers[0].norm.weight.grad is None  # built but unused, as in the reference
    for name, parameter in net.named_parameters():
        if not name.startswith("layers.0.norm") and name != "attention.score.bias":
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(float(layer.conv.aggr_module.t.grad.abs()) > 0 for layer in net.layers)  # learnable softmax temperature


def test_res_plus_variant_and_checks():
    net = small(block="res+").eval()
    coords, slide = two_slides(10, 5)
    with torch.no_grad():
        assert torch.isfinite(net(Batch.single(path=torch.randn(15, 16), coords=coords, slide_index=slide)).logits).all()
    with pytest.raises(ValueError, match="block must be"):
        small(block="dense")
    with pytest.raises(ValueError, match="coordinates"):
        net(Batch.single(path=torch.randn(15, 16), coords=coords[:3], slide_index=slide))
