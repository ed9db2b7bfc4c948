"""FLOPs of one forward pass, measured with ``torch.utils.flop_counter.FlopCounterMode``.

``FlopCounterMode`` counts the matrix products and attention kernels (2 FLOPs per multiply-add)
that dominate these models; element-wise activations, norms and softmax are not counted.

The counter used here is torch's with its dispatch function undecorated: torch wraps it to keep
``torch.compile`` out, and that wrapper imports ``torch._dynamo`` on first use (1.3 s of a
training job's start-up, which counts the FLOPs of its model). Counts are the same (tested).
"""

from __future__ import annotations

import inspect

import torch
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

from mmsurv.models.base import Batch, SurvivalModel


class _EagerDispatch(_FlopCounterMode):
    """torch's flop-counting dispatch mode, without the Dynamo-disabling wrapper."""

    __torch_dispatch__ = inspect.unwrap(_FlopCounterMode.__torch_dispatch__)

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


class EagerFlopCounter(FlopCounterMode):
    """``FlopCounterMode`` that does not import ``torch._dynamo`` (see the module docstring)."""

    def __enter__(self):
        self.flop_counts.clear()
        self.mod_tracker.__enter__()
        self.mode = _EagerDispatch(self)
        self.mode.__enter__()
        return self


def count_flops(model: SurvivalModel, bag_size: int = 1000, batch: Batch | None = None) -> int:
    """FLOPs of ``model``'s forward on ``batch`` (default: a random one with ``bag_size`` patches)."""
    device = next(model.parameters()).device
    batch = batch if batch is not None else model.example_batch(bag_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), EagerFlopCounter(display=False) as counter:
            model(batch)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
