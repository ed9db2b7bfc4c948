"""FLOP counting (mmsurv.models.flops): the Dynamo-free counter counts as torch's own."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mmsurv.models import ModelInputs, build_model, count_flops

INPUTS = ModelInputs(omic_dim=60, group_sizes=[10, 20, 30], group_names=["a", "b", "c"])


@pytest.mark.parametrize("name", ["snn", "abmil", "transmil", "mcat", "mome"])
def test_counts_equal_torchs_flop_counter(name):
    torch.manual_seed(0)
    model = build_model(name, INPUTS).eval()
    batch = model.example_batch(bag_size=50)
    with torch.no_grad(), FlopCounterMode(display=False) as reference:
        model(batch)
    assert count_flops(model, batch=batch) == reference.get_total_flops() > 0
