"""CMTA: reference parameter count, alignment terms in the loss, the square padding of the bag."""

from __future__ import annotations

import torch

from mmsurv.models import ModelInputs, build_model, n_params

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
SMALL = ModelInputs(omic_dim=15, group_sizes=[3, 7, 5], path_dim=32, n_bins=4)



def test_parameter_count_equals_the_reference():
    # FT-ZHOU-ZZZ/CMTA CMTA(omic_sizes=BLCA, fusion="concat", model_size="small"), trainable
    model = build_model("cmta", ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS, path_dim=1024))
    assert n_params(model) == 8_259_140


def test_loss_has_weighted_alignment_terms():
    torch.manual_seed(0)
    model = build_model("cmta", SMALL, {"align_weight": 2.0}).train()
    batch, target = model.example_batch(bag_size=20), model.example_target()
    output = model(batch)
    terms = model.loss(output, target)
    assert set(terms) == {"surv", "align_path", "align_omic"}
    torch.manual_seed(0)
    unweighted = build_model("cmta", SMALL, {"align_weight": 1.0}).train()
    reference = unweighted.loss(unweighted(batch), target)
    torch.testing.assert_close(terms["align_path"], 2.0 * reference["align_path"])
    # the pathology alignment term trains the pathology decoder, and nothing of the genomic decoder
    model.zero_grad()
    terms["align_path"].backward()
    assert model.path_decoder.cls_token.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.omic_decoder.parameters())


def test_bag_is_padded_to_a_square_and_attention_covers_the_real_rows():
    torch.manual_seed(0)
    model = build_model("cmta", SMALL).eval()
    for n in (1, 2, 10, 17):
        with torch.no_grad():
            output = model(model.example_batch(bag_size=n))
        assert output.attention["omic_in_path"].shape == (3, n)
        assert torch.isfinite(output.logits).all()
