"""The loop's optimisers: Adam and AdamW use torch's fused kernels, with the same update as the default."""

import pytest
import torch
from torch import nn

from mmsurv.train.loop import TrainConfig, make_optimizer


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_optimiser_makes_the_same_steps_as_the_per_tensor_one(name):
    torch.manual_seed(0)
    fused_model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    plain_model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    plain_model.load_state_dict(fused_model.state_dict())
    config = TrainConfig(optimizer=name, lr=1e-2, weight_decay=1e-3)
    fused = make_optimizer(fused_model, config)
    assert fused.defaults["fused"] is True
    plain = type(fused)(plain_model.parameters(), lr=1e-2, weight_decay=1e-3, foreach=False)
    x = torch.randn(8, 16)
    for _ in range(5):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_radam_has_no_fused_kernel_and_keeps_the_default():
    optimizer = make_optimizer(nn.Linear(4, 2), TrainConfig(optimizer="radam", lr=1e-3, weight_decay=0.0))
    assert isinstance(optimizer, torch.optim.RAdam) and not optimizer.defaults.get("fused")
