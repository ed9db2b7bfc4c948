"""CLAM-SB: reference count, instance loss on exactly k top / k bottom patches of the bin's classifier,
bag_weight mix, small bags."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.base import SURVIVAL_TERM, Target
from mmsurv.models.clam_sb import CLAMSB, INSTANCE_TERM, instance_indices
from mmsurv.models.survival import nll_surv_loss


def small(seed: int = 0, **params) -> CLAMSB:
    torch.manual_seed(seed)
    return CLAMSB(path_dim=12, n_bins=4, hidden_dim=16, attention_dim=8, **params)


def target(label: int, censored: float = 0.0) -> Target:
    return Target(torch.tensor([label]), torch.tensor([censored]), torch.tensor([5.0]))


class Recorder(torch.nn.Module):
    """Wraps an instance classifier and records the rows it is given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        self.calls.append(x.detach().clone())
        return self.inner(x)


def test_parameter_count_equals_the_official_code():
    assert n_params(build_model("clam_sb", ModelInputs())) == 793_869


@pytest.mark.parametrize("n, k", [(40, 8), (16, 8), (15, 7), (5, 2), (2, 1), (1, 0)])
def test_instance_indices_are_disjoint_top_and_bottom(n, k):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n))
    top, bottom = instance_indices(scores, 8)
    assert len(top) == len(bottom) == k and not set(top.tolist()) & set(bottom.tolist())
    order = torch.argsort(scores, descending=True)
    assert set(top.tolist()) == set(order[:k].tolist()) and set(bottom.tolist()) == set(order[n - k:].tolist())


@pytest.mark.parametrize("label", [0, 2, 3])
def test_instance_loss_uses_k_top_and_k_bottom_patches_and_the_bin_classifier(label):
    model = small().eval()
    recorders = [Recorder(c) for c in model.instance_classifiers]
    model.instance_classifiers = torch.nn.ModuleList(recorders)
    batch = model.example_batch(bag_size=40)
    output = model(batch)
    terms = model.loss(output, target(label))
    assert [len(r.calls) for r in recorders] == [1 if i == label else 0 for i in range(4)]
    h, raw = output.features.detach(), output.attention_raw.detach()[0]
    order = torch.argsort(raw, descending=True)
    rows = recorders[label].calls[0]
    assert rows.shape == (16, 16)
    assert torch.equal(rows[:8], h[order[:8]]) and torch.equal(rows[8:], h[order[-8:].flip(0)])
    logits = recorders[label].inner(rows)
    expected = F.cross_entropy(logits, torch.tensor([1] * 8 + [0] * 8))
    assert float(terms[INSTANCE_TERM].detach()) == pytest.approx(0.3 * float(expected.detach()), rel=1e-6)


def test_bag_weight_mixes_the_survival_and_instance_terms():
    model = small(bag_weight=0.6).eval()
    with torch.no_grad():
        output = model(model.example_batch(bag_size=30))
        terms = model.loss(output, target(1, 1.0))
        nll = nll_surv_loss(output.hazards, output.survival, torch.tensor([1]), torch.tensor([1.0]))
        instance = model.instance_loss(output.attention_raw, output.features, 1)
    assert set(terms) == {SURVIVAL_TERM, INSTANCE_TERM}
    assert float(terms[SURVIVAL_TERM]) == pytest.approx(0.6 * float(nll), rel=1e-6)
    assert float(terms[INSTANCE_TERM]) == pytest.approx(0.4 * float(instance), rel=1e-6)


def test_subtyping_adds_out_of_class_terms_on_the_top_k():
    model = small(subtyping=True).eval()
    recorders = [Recorder(c) for c in model.instance_classifiers]
    model.instance_classifiers = torch.nn.ModuleList(recorders)
    output = model(model.example_batch(bag_size=20))
    model.loss(output, target(1))
    assert [len(r.calls) for r in recorders] == [1, 1, 1, 1]
    assert [r.calls[0].shape[0] for r in recorders] == [8, 16, 8, 8]


def test_small_bags_shrink_k_and_a_single_patch_has_no_instance_term():
    model = small().train()
    output = model(model.example_batch(bag_size=5))
    assert float(model.loss(output, target(0))[INSTANCE_TERM].detach()) > 0
    batch = model.example_batch(bag_size=1)
    batch.values["path"] = torch.zeros_like(batch.values["path"])
    output = model(batch)
    terms = model.loss(output, target(2))
    assert float(terms[INSTANCE_TERM].detach()) == 0.0 and torch.isfinite(terms[SURVIVAL_TERM])
    sum(terms.values()).backward()


def test_instance_loss_trains_the_bin_classifier_and_the_embedding_not_the_attention():
    model = small().train()
    output = model(model.example_batch(bag_size=24))
    model.loss(output, target(3))[INSTANCE_TERM].backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["instance_classifiers.3.weight"].abs().sum() > 0
    assert grads["instance_classifiers.0.weight"] is None
    assert grads["fc.0.weight"].abs().sum() > 0
    assert grads["attention.score.weight"] is None and grads["classifier.weight"] is None


def smooth_top1_svm_by_hand(logits, targets, alpha=1.0, tau=1.0, threshold=1e3):
    """The topk package's SmoothTop1SVM, row by row in plain floats."""
    import math

    losses = []
    for row, y in zip(logits.tolist(), targets.tolist()):
        margins = [x + (alpha if j != y else 0.0) - row[y] for j, x in enumerate(row)]
        first, second = sorted(row, reverse=True)[:2]
        if first - second >= tau * math.log(threshold):
            losses.append(max(margins))
        else:
            losses.append(tau * math.log(sum(math.exp(m / tau) for m in margins)))
    return sum(losses) / len(losses)


def test_smooth_top1_svm_is_the_topk_packages_loss():
    from mmsurv.models.clam_sb import smooth_top1_svm

    logits = torch.tensor([[0.3, -1.2], [2.0, 1.5], [9.0, 0.5], [-4.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([0, 1, 0, 0, 1])  # rows 2 and 3 lead by ≥ log(1000): the hard branch
    assert float(smooth_top1_svm(logits, targets)) == pytest.approx(smooth_top1_svm_by_hand(logits, targets), rel=1e-12)
    assert float(smooth_top1_svm(logits[2:4], targets[2:4])) == pytest.approx((0.0 + 9.0) / 2)


def test_svm_instance_loss_option_replaces_the_cross_entropy():
    ce, svm = small().eval(), small(instance_loss="svm").eval()
    batch = ce.example_batch(bag_size=40)
    out_ce, out_svm = ce(batch), svm(batch)
    torch.testing.assert_close(out_ce.logits, out_svm.logits)
    rows = torch.cat(instance_indices(out_svm.attention_raw.detach()[0], 8))
    from mmsurv.models.clam_sb import smooth_top1_svm

    expected = smooth_top1_svm(svm.instance_classifiers[1](out_svm.features[rows]), torch.tensor([1] * 8 + [0] * 8))
    svm_term = float(svm.loss(out_svm, target(1))[INSTANCE_TERM].detach())
    assert svm_term == pytest.approx(0.3 * float(expected.detach()), rel=1e-6)
    assert float(ce.loss(out_ce, target(1))[INSTANCE_TERM].detach()) != pytest.approx(svm_term)
    with pytest.raises(ValueError, match="instance_loss must be one of"):
        small(instance_loss="hinge")
