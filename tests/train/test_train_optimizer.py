"""The loop's optimisers and schedules: fused Adam/AdamW, RAdam's decoupled weight decay (the
references' rule, by hand), exemptions of biases and 1-D weights, Lookahead, poly and per-step cosine."""

import math

import pytest
import torch
from test_train_contract import FakeDataset  # same folder (test folders have no __init__.py)
from torch import nn

from mmsurv.models.base import ModelOutput, SurvivalModel
from mmsurv.train.loop import TrainConfig, fit, l1_norm, make_optimizer
from mmsurv.train.optim import OPTIMIZERS, add_lookahead, eager_optimizer_class, make_scheduler, steps_per_epoch


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


# --- decoupled weight decay, exemptions, Lookahead (issue 24 item 9) ---------------------------------

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class Toy(nn.Module):
    """Two parameters: a 1×1 weight (2-D, decayed) and a bias (1-D, exempt under no_decay_1d)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1).double()
        with torch.no_grad():
            self.layer.weight.fill_(2.0)
            self.layer.bias.fill_(-1.0)


def rectified_step_by_hand(p, g, m0, v0, t, lr, wd, decoupled):
    """One step of Liu et al.'s RAdam (as SurvPath/TransMIL/HDMoE ship it) at step t, in plain floats."""
    if not decoupled:
        g = g + wd * p
    m = BETA1 * m0 + (1 - BETA1) * g
    v = BETA2 * v0 + (1 - BETA2) * g * g
    rho_inf = 2 / (1 - BETA2) - 1
    rho_t = rho_inf - 2 * t * BETA2 ** t / (1 - BETA2 ** t)
    assert rho_t >= 5  # the rectified branch
    r = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    step = lr * r * (1 - BETA2 ** t) ** 0.5 / (1 - BETA1 ** t)
    if decoupled:
        p = p - wd * lr * p
    return p - step * m / (v ** 0.5 + EPS)


@pytest.mark.parametrize("decoupled", [True, False])
def test_radam_weight_decay_rule_on_a_two_parameter_toy_one_step_by_hand(decoupled):
    lr, wd, t = 0.05, 0.3, 10
    model = Toy()
    config = TrainConfig(optimizer="radam", lr=lr, weight_decay=wd, decoupled_weight_decay=decoupled, no_decay_1d=True)
    optimizer = make_optimizer(model, config)
    w, b = model.layer.weight, model.layer.bias
    moments = {w: (0.4, 0.09), b: (-0.2, 0.04)}  # a state after t - 1 steps: (m, v)
    for p, (m0, v0) in moments.items():
        optimizer.state[p] = {"step": torch.tensor(float(t - 1)), "exp_avg": torch.full_like(p, m0),
                              "exp_avg_sq": torch.full_like(p, v0)}
    optimizer.zero_grad()
    (3.0 * w.sum() + 0.5 * b.sum()).backward()  # gradients 3 and 0.5
    optimizer.step()
    expected_w = rectified_step_by_hand(2.0, 3.0, 0.4, 0.09, t, lr, wd, decoupled)
    expected_b = rectified_step_by_hand(-1.0, 0.5, -0.2, 0.04, t, lr, 0.0, decoupled)  # the bias is exempt
    assert float(w.detach()) == pytest.approx(expected_w, rel=1e-12, abs=1e-14)
    assert float(b.detach()) == pytest.approx(expected_b, rel=1e-12, abs=1e-14)
    other = rectified_step_by_hand(2.0, 3.0, 0.4, 0.09, t, lr, wd, not decoupled)
    assert abs(expected_w - other) > 1e-3  # the two rules give different weights at this step


def test_radam_decoupled_decay_is_the_reference_update_over_many_steps():
    """torch's RAdam(decoupled_weight_decay=True) follows Liu et al.'s RAdam from step 1 (un-rectified
    steps included) as long as the gradients are given: compared with the formula step by step."""
    lr, wd = 0.01, 0.1
    model = Toy()
    optimizer = make_optimizer(model, TrainConfig(optimizer="radam", lr=lr, weight_decay=wd, decoupled_weight_decay=True))
    p, m, v = 2.0, 0.0, 0.0
    for t in range(1, 13):
        g = 1.5 * (-1) ** t + 0.25 * t
        optimizer.zero_grad()
        (g * model.layer.weight.sum()).backward()
        model.layer.bias.grad = None
        optimizer.step()
        m, v = BETA1 * m + (1 - BETA1) * g, BETA2 * v + (1 - BETA2) * g * g
        rho_inf = 2 / (1 - BETA2) - 1
        rho_t = rho_inf - 2 * t * BETA2 ** t / (1 - BETA2 ** t)
        p = p - wd * lr * p
        if rho_t >= 5:
            r = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            p = p - lr * r * (1 - BETA2 ** t) ** 0.5 / (1 - BETA1 ** t) * m / (v ** 0.5 + EPS)
        else:
            p = p - lr / (1 - BETA1 ** t) * m
        assert float(model.layer.weight.detach()) == pytest.approx(p, rel=1e-12), t


class WithNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.norm = nn.LayerNorm(3)
        self.token = nn.Parameter(torch.ones(1, 1, 3))  # 3-D: decayed (TransMIL's class token)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)


@pytest.mark.parametrize("no_decay_1d", [True, False])
def test_biases_and_1d_weights_are_exempt_from_decay(no_decay_1d):
    torch.manual_seed(0)
    model = WithNorm()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    lr, wd = 0.1, 0.5
    config = TrainConfig(optimizer="radam", lr=lr, weight_decay=wd, decoupled_weight_decay=True, no_decay_1d=no_decay_1d)
    optimizer = make_optimizer(model, config)
    assert all(p.requires_grad for group in optimizer.param_groups for p in group["params"])
    for p in model.parameters():  # zero gradients: the step is the decay alone
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    optimizer.step()
    exempt = {"linear.bias", "norm.weight", "norm.bias"}
    for name, p in model.named_parameters():
        if name == "frozen":
            assert torch.equal(p, before[name])
        elif no_decay_1d and name in exempt:
            assert torch.equal(p, before[name]), name
        else:
            torch.testing.assert_close(p, before[name] * (1 - lr * wd), rtol=0, atol=1e-7)


def test_lookahead_pulls_fast_weights_to_the_slow_copy_every_k_steps():
    """TransMIL's Lookahead(k=6, α=0.5): the slow copy is taken at step 6 (nothing moves), then at step
    12 the weights become slow + α(fast − slow)."""
    k, alpha = 6, 0.5
    model, plain = Toy(), Toy()
    config = TrainConfig(optimizer="adam", lr=0.1, weight_decay=0.0)
    wrapped = make_optimizer(model, TrainConfig(**{**config.as_dict(), "lookahead": True, "lookahead_k": k,
                                                    "lookahead_alpha": alpha}))
    reference = make_optimizer(plain, config)
    slow = None
    for step in range(1, 13):
        for net, optimizer in ((model, wrapped), (plain, reference)):
            optimizer.zero_grad()
            (net.layer.weight.sum() ** 2 + net.layer.bias.sum()).backward()
            optimizer.step()
        if step == k:
            assert torch.equal(model.layer.weight, plain.layer.weight)  # the first sync changes nothing
            slow = {n: p.detach().clone() for n, p in plain.named_parameters()}
        elif step < k:
            assert torch.equal(model.layer.weight, plain.layer.weight)
    for name, p in model.named_parameters():  # fast trajectory of steps 7-12 run by plain Adam from the same state
        fast = dict(plain.named_parameters())[name]
        torch.testing.assert_close(p, slow[name] + alpha * (fast - slow[name]))
    assert "lookahead_slow" in wrapped.state_dict()["state"][0]


def test_optimizer_settings_are_validated():
    with pytest.raises(ValueError, match="contradicts optimizer adamw"):
        TrainConfig.from_dict({"optimizer": "adamw", "decoupled_weight_decay": False})
    with pytest.raises(ValueError, match="lookahead_k"):
        TrainConfig.from_dict({"lookahead": True, "lookahead_k": 0})
    with pytest.raises(ValueError, match="l1_modules"):
        TrainConfig.from_dict({"l1_modules": "fusion"})
    assert isinstance(make_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="adamw", decoupled_weight_decay=True)),
                      torch.optim.AdamW)


# --- schedules: poly (HDMoE) and per-step cosine with warm-up (SurvPath, OmicMLP) --------------------

def lr_sequence(config: TrainConfig, steps: int | None, count: int) -> list[float]:
    """The lr in force at each of ``count`` consecutive scheduler positions."""
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=config.lr)
    scheduler = make_scheduler(optimizer, config, steps)
    values = []
    for _ in range(count):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_poly_schedule_per_epoch_is_hdmoes_engine():
    config = TrainConfig(lr=5e-4, epochs=30, scheduler="poly", poly_power=0.9)
    expected = [5e-4 * (1 - e / 30) ** 0.9 for e in range(30)]
    assert lr_sequence(config, steps=7, count=30) == pytest.approx(expected, rel=1e-12)
    assert expected[-1] == pytest.approx(5e-4 * (1 / 30) ** 0.9)


def test_poly_schedule_per_step_counts_optimiser_steps():
    config = TrainConfig(lr=1.0, epochs=2, scheduler="poly", poly_power=2.0, scheduler_interval="step")
    assert lr_sequence(config, steps=3, count=6) == pytest.approx([(1 - s / 6) ** 2 for s in range(6)])


def test_cosine_per_step_with_one_warmup_epoch_is_surv_paths_schedule():
    """Hugging Face's get_cosine_schedule_with_warmup(W = 1 epoch of steps, T = epochs × steps), as
    SurvPath steps it after every optimiser step: lr·s/W, then lr·½(1 + cos(π(s − W)/(T − W)))."""
    steps, epochs, lr = 4, 3, 5e-4
    config = TrainConfig(lr=lr, epochs=epochs, scheduler="cosine", scheduler_interval="step", warmup_epochs=1)
    total, warmup = steps * epochs, steps
    expected = [lr * s / warmup if s < warmup else lr * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
                for s in range(total)]
    assert expected[0] == 0.0 and expected[warmup] == lr
    assert lr_sequence(config, steps, total) == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_cosine_per_epoch_without_warmup_is_unchanged():
    config = TrainConfig(lr=2e-4, epochs=5, scheduler="cosine", min_lr=1e-6)
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=config.lr)
    assert isinstance(make_scheduler(optimizer, config), torch.optim.lr_scheduler.CosineAnnealingLR)
    expected = [1e-6 + (2e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * e / 5)) for e in range(5)]
    assert lr_sequence(config, None, 5) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("values, message", [
    ({"scheduler": "step", "scheduler_interval": "step"}, "needs scheduler cosine or poly"),
    ({"scheduler_interval": "batch"}, "scheduler_interval must be one of"),
    ({"scheduler": "none", "warmup_epochs": 1}, "warmup_epochs needs"),
    ({"scheduler": "poly", "poly_power": 0}, "poly_power must be positive"),
    ({"scheduler": "cosine", "warmup_epochs": -1}, "warmup_epochs must be"),
])
def test_schedule_settings_are_validated(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize("n, batch, accum, flush, expected", [
    (10, 1, 1, True, 10), (10, 1, 4, True, 3), (10, 1, 4, False, 2), (10, 3, 2, True, 2), (3, 1, 32, False, 0)])
def test_steps_per_epoch(n, batch, accum, flush, expected):
    config = TrainConfig(batch_size=batch, grad_accum=accum, flush_accumulation=flush)
    assert steps_per_epoch(n, config) == expected


class Linear(SurvivalModel):
    inputs = ("omic",)

    def __init__(self):
        super().__init__(n_bins=4, omic_dim=3)
        self.linear = nn.Linear(3, 4)

    def forward(self, batch):
        return ModelOutput(logits=self.linear(batch.omic))


def test_fit_steps_a_per_step_schedule_after_every_optimiser_step():
    torch.manual_seed(0)
    model = Linear()
    config = TrainConfig(optimizer="radam", lr=1e-2, epochs=3, grad_accum=4, scheduler="cosine",
                         scheduler_interval="step", warmup_epochs=1, weighted_sampling=False)
    train = FakeDataset(n=10, dim=3)  # 3 optimiser steps per epoch (4 + 4 + the flushed 2)
    seen = []
    original = torch.optim.RAdam.step

    def record(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.RAdam.step = record
    try:
        result = fit(model, train, FakeDataset(n=4, dim=3, seed=1), config)
    finally:
        torch.optim.RAdam.step = original
    total, warmup = 9, 3
    expected = [1e-2 * s / warmup if s < warmup else 1e-2 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
                for s in range(total)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-18)
    assert [record["lr"] for record in result.history] == pytest.approx(expected[::3], abs=1e-18)


def test_l1_over_named_modules_only():
    model = nn.Sequential()
    model.add_module("omic", nn.Linear(2, 2))
    model.add_module("path", nn.Linear(2, 2))
    expected = sum(p.abs().sum() for p in model.omic.parameters())
    assert torch.allclose(l1_norm(model, ["omic"]), expected)
    assert torch.allclose(l1_norm(model), expected + sum(p.abs().sum() for p in model.path.parameters()))
    with pytest.raises(ValueError, match="no submodule 'fusion'.*omic, path"):
        l1_norm(model, ["fusion"])


@pytest.mark.parametrize("name, lookahead", [("adam", False), ("adamw", True), ("radam", True)])
def test_eager_optimisers_step_and_save_as_torchs_own(name, lookahead):
    torch.manual_seed(0)
    ours_model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    torch_model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    torch_model.load_state_dict(ours_model.state_dict())
    defaults = make_optimizer(nn.Linear(2, 2), TrainConfig(optimizer=name, lr=1e-2, weight_decay=1e-3)).defaults
    if name == "adamw":  # AdamW's defaults record the rule it takes no argument for
        defaults.pop("decoupled_weight_decay", None)
    ours = eager_optimizer_class(OPTIMIZERS[name])(ours_model.parameters(), **defaults)
    reference = OPTIMIZERS[name](torch_model.parameters(), **defaults)
    assert type(ours) is not OPTIMIZERS[name] and isinstance(ours, OPTIMIZERS[name])
    if lookahead:
        add_lookahead(ours, 2, 0.5)
        add_lookahead(reference, 2, 0.5)
    x = torch.randn(8, 16)
    for _ in range(5):
        for model, optimizer in ((ours_model, ours), (torch_model, reference)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(ours_model.parameters(), torch_model.parameters()):
        assert torch.equal(a, b)
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert ours_state["param_groups"] == reference_state["param_groups"]
    for key, state in reference_state["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(ours_state["state"][key][field]), torch.as_tensor(value))
    ours.load_state_dict(reference_state)  # and the other way round
    assert ours.state_dict()["param_groups"] == reference_state["param_groups"]


def test_a_training_step_and_its_checkpoint_do_not_load_torch_dynamo():
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from mmsurv.train.optim import make_optimizer, make_scheduler\n"
        "from mmsurv.train.settings import TrainConfig\n"
        "from mmsurv.models.flops import count_flops\n"
        "model = nn.Linear(4, 2)\n"
        "config = TrainConfig(optimizer='adam', lr=1e-3, lookahead=True, scheduler='cosine')\n"
        "optimizer = make_optimizer(model, config)\n"
        "scheduler = make_scheduler(optimizer, config, steps=1)\n"
        "model(torch.randn(3, 4)).sum().backward()\n"
        "optimizer.step(); optimizer.zero_grad(); scheduler.step()\n"
        "optimizer.load_state_dict(optimizer.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr
