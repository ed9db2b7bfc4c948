"""Dropout placement against the official code: what an eval-mode output comparison cannot see.

In evaluation every dropout is the identity, so a golden output (test_golden_outputs.py) passes whether
a dropout sits in the right place, has the right rate or exists at all. A fixture's optional
``dropout`` entry records the reference's layout, taken in the same scratch run as its outputs, with
:func:`dropout_layout` (the same code on both sides):

* ``calls``: every call of a dropout function (``torch.nn.functional.dropout`` / ``alpha_dropout`` /
  ``feature_alpha_dropout`` / ``dropout1d`` / ``dropout2d``, which ``nn.Dropout`` and ``nn.AlphaDropout``
  call) during one forward pass on the fixture's batch, as ``[function, p, numel, last dim]`` of its
  input, sorted (the order of independent branches is free; the size of the tensor says where the
  dropout sits: patch tokens, genomic tokens, class token, an expert's hidden layer, ...); calls that
  are the identity in any mode are left out: rate 0 (CMTA's vendored ``MultiheadAttention`` calls
  dropout with p = 0) and empty inputs (HDMoE's reference runs every unselected expert on 0 rows);
* ``attention``: the sorted ``dropout`` rates of the ``MultiheadAttention`` modules, whose attention
  dropout is skipped (rate set to 0) in evaluation, so it never shows in ``calls``.

The pass runs in eval mode with gradients enabled (so that ``nn.TransformerEncoderLayer`` does not take
its fused inference path, which skips its dropout modules).
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from golden import GOLDEN_DIR, build_from_fixture, golden_batch, load_fixture

DROPOUT_FUNCTIONS = ("dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d")
FIXTURES = [p for p in sorted(GOLDEN_DIR.glob("*.json")) if "dropout" in load_fixture(p)]


@contextmanager
def traced_dropout():
    """Record ``[function, p, numel, last dim]`` of the dropout calls made inside the block (p > 0, input not empty)."""
    calls: list[list] = []
    originals = {name: getattr(F, name) for name in DROPOUT_FUNCTIONS}

    def tracer(name, function):
        def traced(input, p=0.5, *args, **kwargs):
            if float(p) > 0 and input.numel() > 0:
                calls.append([name, round(float(p), 6), int(input.numel()), int(input.shape[-1])])
            return function(input, p, *args, **kwargs)
        return traced

    try:
        for name, function in originals.items():
            setattr(F, name, tracer(name, function))
        yield calls
    finally:
        for name, function in originals.items():
            setattr(F, name, function)


def dropout_layout(model: torch.nn.Module, forward) -> dict:
    """The dropout calls of ``forward()`` (model in eval mode, gradients on) and the attention dropouts."""
    model.eval()
    with torch.enable_grad(), traced_dropout() as calls:
        forward()
    attention = sorted(float(m.dropout) for m in model.modules() if type(m).__name__ == "MultiheadAttention")
    return {"calls": sorted(calls), "attention": attention}


def test_tracer_sees_module_and_functional_dropout_and_restores_them():
    layer = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Dropout(0.25), torch.nn.AlphaDropout(0.1))
    x = torch.randn(2, 3)

    def forward():
        h = F.dropout(layer(x), 0.5, training=False)
        F.dropout(h, p=0.0)  # identities: not recorded
        F.dropout(h[:0], 0.3)
        return h

    layout = dropout_layout(layer, forward)
    assert layout == {"calls": [["alpha_dropout", 0.1, 10, 5], ["dropout", 0.25, 10, 5], ["dropout", 0.5, 10, 5]],
                      "attention": []}
    assert F.dropout.__name__ == "dropout" and F.alpha_dropout.__name__ == "alpha_dropout"


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_dropout_layout_equals_the_official_code(path):
    fixture = load_fixture(path)
    model = build_from_fixture(fixture)
    batch = golden_batch(model, fixture["bag_size"], fixture.get("seed", 0))
    ours = dropout_layout(model, lambda: model(batch))
    expected = fixture["dropout"]
    assert ours["attention"] == expected["attention"], f"{path.name}: MultiheadAttention dropout rates differ"
    missing = [c for c in expected["calls"] if c not in ours["calls"]]
    extra = [c for c in ours["calls"] if c not in expected["calls"]]
    assert ours["calls"] == expected["calls"], (
        f"{path.name}: dropout calls differ from {fixture['source']}: the reference's not ours {missing[:5]}, "
        f"ours not the reference's {extra[:5]}")
