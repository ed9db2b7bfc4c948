"""SNNTrans: sizes (MCAT's genomic branch), one SNN per group, attention over the group tokens."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsurv.models import ModelInputs, build_model, n_params
from mmsurv.models.base import Batch

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]


def test_parameter_count_on_blca_groups_and_mcat_sizes():
    model = build_model("snntrans", ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS))
    assert n_params(model) == 2_517_509
    mcat = build_model("mcat", ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS))
    # the genomic half of MCAT: its SNNs, genomic transformer, genomic readout; a 256 → 4 classifier
    same = sum(p.numel() for name, p in mcat.named_parameters()
               if name.startswith(("omic_encoders", "omic_transformer", "omic_readout")))
    assert n_params(model) == same + 256 * 4 + 4
    assert [[(m.in_features, m.out_features) for m in enc.modules() if isinstance(m, nn.Linear)]
            for enc in model.omic_encoders] == [[(s, 256), (256, 256)] for s in BLCA_GROUPS]
    assert len(model.transformer.layers) == 2 and model.transformer.layers[0].self_attn.num_heads == 8


def test_each_group_has_its_own_encoder_and_pooling_weights_sum_to_one():
    torch.manual_seed(0)
    model = build_model("snntrans", ModelInputs(omic_dim=15, group_sizes=[3, 7, 5])).eval()
    batch = model.example_batch(batch_size=2)
    output = model(batch)
    weights = output.attention["omic"]
    assert weights.shape == (2, 3) and torch.allclose(weights.sum(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="built for 3 genomic groups"):
        model(Batch(values={"omic_groups": batch.values["omic_groups"][:2]}, size=2))


def test_the_group_tokens_attend_to_each_other():
    """Changing group 0 changes the transformer output of token 1 (whose own input is unchanged)."""
    torch.manual_seed(0)
    model = build_model("snntrans", ModelInputs(omic_dim=15, group_sizes=[3, 7, 5])).eval()
    groups = model.example_batch().values["omic_groups"]

    def token_outputs(values):
        tokens = torch.stack([enc(g) for enc, g in zip(model.omic_encoders, values)], dim=1)
        return tokens, model.transformer(tokens)

    with torch.no_grad():
        tokens, before = token_outputs(groups)
        changed_tokens, after = token_outputs([groups[0] + 3.0, *groups[1:]])
    assert torch.equal(tokens[:, 1:], changed_tokens[:, 1:]) and not torch.equal(tokens[:, 0], changed_tokens[:, 0])
    assert not torch.allclose(before[:, 1], after[:, 1])
