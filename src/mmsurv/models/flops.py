"""FLOPs of one forward pass, measured with ``torch.utils.flop_counter.FlopCounterMode``.

``FlopCounterMode`` counts the matrix products and attention kernels (2 FLOPs per multiply-add)
that dominate these models; element-wise activations, norms and softmax are not counted.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmsurv.models.base import Batch, SurvivalModel


def count_flops(model: SurvivalModel, bag_size: int = 1000, batch: Batch | None = None) -> int:
    """FLOPs of ``model``'s forward on ``batch`` (default: a random one with ``bag_size`` patches)."""
    device = next(model.parameters()).device
    batch = batch if batch is not None else model.example_batch(bag_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
