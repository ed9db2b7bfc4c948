"""DeepAttnMISL: reference sizes, k-means phenotype clusters (cached, deterministic), masked cluster attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mmsurv.models.deepattnmisl as module
from mmsurv.models import Batch, ModelInputs, build_model, n_params
from mmsurv.models.deepattnmisl import DeepAttnMISL, bag_fingerprint, kmeans_labels

torch.set_num_threads(1)  # small sizes: one thread is fastest and reproducible


def model(seed: int = 0, **params) -> DeepAttnMISL:
    torch.manual_seed(seed)
    return DeepAttnMISL(path_dim=params.pop("path_dim", 16), **params).eval()


def blobs(n_per: int = 30, k: int = 4, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Well separated clusters, rows shuffled: (N×dim bag, true cluster of every row)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 20
    truth = np.repeat(np.arange(k), n_per)
    rng.shuffle(truth)
    bag = centres[truth] + rng.standard_normal((truth.size, dim))
    return torch.tensor(bag, dtype=torch.float32), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_parameter_count_matches_the_reference():
    blca = build_model("deepattnmisl", ModelInputs(omic_dim=3392, group_sizes=[94, 334, 521, 468, 1496, 479]))
    assert n_params(blca) == 69_925  # 1024-d input, 10 clusters, 4 outputs
    assert n_params(DeepAttnMISL(path_dim=4096, n_bins=1)) == 266_434  # the reference code's own setting
    shapes = [(m.in_features, m.out_features) for m in blca.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(1024, 64), (64, 32), (32, 1), (64, 32), (32, 4)]
    assert blca.n_clusters == 10 and isinstance(blca.head[2], nn.Dropout) and blca.head[2].p == 0.5


def test_kmeans_recovers_separated_phenotypes_and_is_deterministic():
    bag, truth = blobs()
    first = kmeans_labels(bag.numpy(), 4, seed=0)
    assert same_partition(first, truth)
    assert np.array_equal(first, kmeans_labels(bag.numpy(), 4, seed=0))
    sub = kmeans_labels(bag.numpy(), 4, seed=3, max_patches=40)  # centres from 40 rows, all rows assigned
    assert sub.shape == (120,) and same_partition(sub, truth)
    assert np.array_equal(sub, kmeans_labels(bag.numpy(), 4, seed=3, max_patches=40))


def test_small_bags_make_every_patch_its_own_cluster():
    assert kmeans_labels(np.zeros((3, 5), np.float32), 10).tolist() == [0, 1, 2]
    net = model()
    out = net(Batch.single(path=torch.randn(3, 16)))
    weights = out.attention["clusters"][0]
    assert torch.all(weights[3:] == 0) and torch.all(weights[:3] > 0)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.isfinite(net(Batch.single(path=torch.zeros(1, 16))).logits).all()


def test_duplicate_patches_leave_empty_clusters_masked():
    bag = torch.cat([torch.zeros(20, 16), torch.ones(20, 16)])  # 2 distinct points, 10 clusters
    out = model()(Batch.single(path=bag))
    weights = out.attention["clusters"][0]
    assert torch.isfinite(out.logits).all() and weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert int((weights > 0).sum()) <= 10 and out.attention["path"].sum().item() == pytest.approx(1.0, abs=1e-5)


def test_clusters_are_cached_by_bag_content(monkeypatch):
    calls = []
    real = module.kmeans_labels
    monkeypatch.setattr(module, "kmeans_labels", lambda *a, **k: calls.append(1) or real(*a, **k))
    net = model(n_clusters=4)
    bag, _ = blobs()
    first = net.cluster_labels(bag)
    again = net.cluster_labels(bag.clone())
    assert len(calls) == 1 and torch.equal(first, again)
    changed = bag.clone()
    changed[57, 3] += 1.0  # one value of one row: a different bag
    net.cluster_labels(changed)
    assert len(calls) == 2 and len(net._clusters) == 2
    assert torch.equal(model(seed=5, n_clusters=4).cluster_labels(bag), first)  # a fresh model, same seed
    net.cache_size = 1
    net.cluster_labels(torch.randn(30, 16))
    assert len(net._clusters) == 1


def test_fingerprint_sees_shape_and_values():
    bag = torch.randn(100, 8)
    assert bag_fingerprint(bag) == bag_fingerprint(bag.clone())
    assert bag_fingerprint(bag) != bag_fingerprint(bag[:99])
    other = bag.clone()
    other[3, 0] += 1e-3
    assert bag_fingerprint(bag) != bag_fingerprint(other)
    assert bag_fingerprint(torch.zeros(0, 8)) != bag_fingerprint(torch.zeros(0, 9))


def test_forward_equals_the_per_cluster_reference_computation():
    net = model(n_clusters=6)
    bag = torch.randn(40, 16)
    labels = torch.tensor([0, 2, 3, 5] * 10)  # clusters 1 and 4 empty: masked
    net.cluster_labels = lambda _: labels
    with torch.no_grad():
        out = net(Batch.single(path=bag))
        vectors, present = [], []
        for cluster in range(6):  # the reference: one MI-FCN pass per cluster, mean pool, masked softmax
            rows = bag[labels == cluster]
            present.append(len(rows) > 0)
            vectors.append(net.embed(rows).mean(0) if len(rows) else torch.zeros(64))
        h = torch.stack(vectors)
        scores = net.attention(h)[:, 0]
        mask = torch.tensor(present, dtype=torch.float32)
        shifted = (scores - (scores * mask + (1 - 1 / (mask + 1e-5))).max()).exp() * mask
        weights = shifted / shifted.sum()
        expected = net.head(weights @ h)
    assert present == [True, False, True, True, False, True]
    assert torch.allclose(out.logits[0], expected, atol=1e-5)
    assert torch.allclose(out.attention["clusters"][0], weights, atol=1e-6) and weights[1] == weights[4] == 0
    assert torch.allclose(out.attention["path"][0], weights[labels] / 10, atol=1e-6)


def test_gradients_reach_the_mi_fcn_but_not_the_attention_shift():
    net = model().train()
    out = net(Batch.single(path=torch.randn(200, 16)))
    out.logits.sum().backward()
    assert net.embed[0].weight.grad.abs().sum() > 0 and net.attention[0].weight.grad.abs().sum() > 0
    assert net.attention[2].bias.grad.abs().item() < 1e-6  # softmax ignores a shift (reference quirk, kept)


def test_dropout_free_eval_is_reproducible_and_risk_is_finite():
    net = model()
    batch = Batch.single(path=torch.randn(50, 16))
    with torch.no_grad():
        assert torch.equal(net(batch).logits, net(batch).logits)
        assert torch.isfinite(net(batch).risk).all()
