"""The loop's optimiser and learning-rate schedule, built from :class:`~mmsurv.train.settings.TrainConfig`.

**Optimisers.** ``adam``, ``adamw``, ``radam`` (torch's). Weight decay follows each optimiser's
own rule unless ``decoupled_weight_decay`` says otherwise: ``True`` shrinks the weights directly,
``p ← p − lr·wd·p``, before the adaptive update (AdamW's rule; what the RAdam of Liu et al. that
SurvPath, TransMIL and HDMoE ship does: ``p_data.add_(-wd·lr, p_data)`` ahead of the step), and
``False`` adds ``wd·p`` to the gradient (torch's Adam/RAdam default). torch's RAdam with
``decoupled_weight_decay=True`` is the same update as that reference RAdam (rectification
``r_t``, ``eps`` added to the uncorrected ``√v``, an un-adapted momentum step while ``ρ_t ≤ 5``;
tested on a hand-computed step). ``no_decay_1d`` exempts every 1-D parameter (biases, LayerNorm
and BatchNorm weights) and every parameter named ``*.bias`` from the decay, as TransMIL's optimiser
factory (``add_weight_decay`` of MyOptimizer/optim_factory.py, which timm's ``create_optimizer``
it copies does too): two parameter groups, exempt first. ``lookahead`` wraps the steps as
Lookahead (Zhang et al. 2019) the way TransMIL's ``lookahead_radam`` does (MyOptimizer/lookahead.py):
every ``lookahead_k`` optimiser steps each parameter that has a gradient is pulled to its slow copy
``slow ← slow + α·(fast − slow); fast ← slow``; the slow copy is taken at the first such sync (so that
sync changes nothing), as there. The slow copies live in the optimiser's state (``state_dict``
saves them) and the counter in its parameter groups.

**Schedules** (``scheduler``; ``scheduler_interval`` ``epoch`` steps it after every epoch,
``step`` after every optimiser step, the epoch's last partial window included):

* ``cosine``: from lr to ``min_lr``; per epoch it is torch's ``CosineAnnealingLR`` (``T_max =
  epochs``); per step, or with a warm-up, ``min_lr + (lr − min_lr)·½(1 + cos(π·(s − W)/(T − W)))``
  after ``W = warmup_epochs`` epochs (in steps when per step) of linear warm-up ``lr·s/W``, ``T``
  the epochs (or optimiser steps) of the run: Hugging Face's ``get_cosine_schedule_with_warmup``,
  which SurvPath steps once per optimiser step with one warm-up epoch (``--warmup_epochs 1``);
* ``poly``: ``lr·(1 − s/T)^poly_power`` (HDMoE's engine sets ``lr·(1 − e/E)^0.9`` at the start
  of epoch ``e = 0 … E−1``); after a warm-up, ``lr·(1 − (s − W)/(T − W))^poly_power``;
* ``step``: torch's ``StepLR`` (``step_size`` epochs, ``gamma``), per epoch only.

**Without TorchDynamo.** torch's optimisers import ``torch._dynamo`` on their first
``add_param_group``, ``step``, ``zero_grad`` or ``state_dict`` (their methods are wrapped to stay
out of ``torch.compile`` graphs): 1.3 s of every training job's start-up here, for a compiler the
loop never uses. The classes built here (:func:`eager_optimizer_class`) are torch's own with those
four methods and ``load_state_dict`` calling the undecorated functions; ``step`` runs under
``torch.no_grad()``, which is what the wrapper does in eager mode for a non-differentiable
optimiser. Same update, same state dict (tested against torch's classes); a process that has
already imported Dynamo (it compiled something) gets torch's classes unchanged.
"""

from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from mmsurv.train.settings import OPTIMIZER_NAMES, TrainConfig

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam}
assert set(OPTIMIZERS) == set(OPTIMIZER_NAMES)

# torch's fused Adam/AdamW kernels (CPU and CUDA): one pass over each parameter per step instead of
# several element-wise passes; 3x faster on CPU (20 M parameters: 35 -> 11 ms per step), which with
# batch 1 and no accumulation is most of a large model's step. Same update up to float rounding (tested).
FUSED_OPTIMIZERS = ("adam", "adamw")


DYNAMO_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


@cache
def eager_optimizer_class(base: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``base`` whose methods no longer import ``torch._dynamo`` (see the module docstring)."""
    raw_step = inspect.unwrap(base.step)

    @torch.no_grad()
    def step(self, closure=None):
        return raw_step(self, closure)

    methods = {name: inspect.unwrap(getattr(torch.optim.Optimizer, name)) for name in DYNAMO_WRAPPED}
    methods["step"] = step
    methods["__doc__"] = f"torch.optim.{base.__name__} without the torch._dynamo import (mmsurv.train.optim)."
    return type(base.__name__, (base,), methods)


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The class of optimiser ``name``: torch's, made eager unless Dynamo is already loaded."""
    base = OPTIMIZERS[name]
    if "torch._dynamo" in sys.modules:
        return base
    return eager_optimizer_class(base)


def exempt_from_decay(name: str, parameter: torch.Tensor) -> bool:
    """TransMIL's (timm's) rule: 1-D parameters and biases take no weight decay."""
    return parameter.dim() == 1 or name.endswith(".bias")


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """The trainable parameters, split into an exempt group (weight decay 0) and the rest with ``no_decay_1d``."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not (config.no_decay_1d and config.weight_decay):
        return [{"params": [p for _, p in named]}]
    exempt = [p for name, p in named if exempt_from_decay(name, p)]
    decayed = [p for name, p in named if not exempt_from_decay(name, p)]
    groups = [{"params": exempt, "weight_decay": 0.0}, {"params": decayed}]
    return [group for group in groups if group["params"]]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser over ``model``'s trainable parameters (see the module docstring)."""
    groups = parameter_groups(model, config)
    options = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.decoupled_weight_decay is not None and config.optimizer != "adamw":  # AdamW always decouples
        options["decoupled_weight_decay"] = config.decoupled_weight_decay
    if config.optimizer in FUSED_OPTIMIZERS and all(p.is_floating_point() for g in groups for p in g["params"]):
        options["fused"] = True
    optimizer = optimizer_class(config.optimizer)(groups, **options)
    if config.lookahead:
        add_lookahead(optimizer, config.lookahead_k, config.lookahead_alpha)
    return optimizer


def add_lookahead(optimizer: torch.optim.Optimizer, k: int, alpha: float) -> None:
    """Make ``optimizer`` Lookahead(optimizer): every ``k`` steps, fast weights ← slow ← slow + α(fast − slow)."""
    for group in optimizer.param_groups:
        group.setdefault("lookahead_step", 0)

    @torch.no_grad()
    def sync(opt: torch.optim.Optimizer, args, kwargs) -> None:
        for group in opt.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % k:
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = opt.state[p]
                if "lookahead_slow" not in state:  # the first sync takes the slow copy: no change
                    state["lookahead_slow"] = p.detach().clone()
                    continue
                slow = state["lookahead_slow"]
                slow.add_(p - slow, alpha=alpha)
                p.copy_(slow)

    optimizer.register_step_post_hook(sync)


def steps_per_epoch(n_patients: int, config: TrainConfig) -> int:
    """Optimiser steps in an epoch of ``n_patients`` visits (batches of ``batch_size``, windows of ``grad_accum``)."""
    batches = math.ceil(n_patients / config.batch_size)
    full, rest = divmod(batches, config.grad_accum)
    return full + (1 if rest and config.flush_accumulation else 0)


@dataclass
class LRFactor:
    """The lr multiplier after ``s`` scheduler steps: linear warm-up over ``warmup`` steps, then cosine
    (to ``floor`` × lr) or polynomial decay over the remaining ``total − warmup``. A callable object
    (not a closure) so that ``LambdaLR.state_dict`` keeps its fields."""

    kind: str  # "cosine" | "poly"
    total: int
    warmup: int = 0
    floor: float = 0.0
    power: float = 0.9

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "poly":
            return (1.0 - progress) ** self.power
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int | None = None):
    """The configured schedule or None; ``steps``: optimiser steps per epoch (needed per step)."""
    if config.scheduler == "none":
        return None
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.scheduler == "cosine" and config.scheduler_interval == "epoch" and not config.warmup_epochs:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    unit = 1
    if config.scheduler_interval == "step":
        if steps is None:
            raise ValueError("a per-step learning-rate schedule needs the number of optimiser steps per epoch")
        unit = max(1, steps)
    factor = LRFactor(config.scheduler, total=config.epochs * unit, warmup=config.warmup_epochs * unit,
                      floor=config.min_lr / config.lr if config.lr else 0.0, power=config.poly_power)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
