"""Golden outputs of the official implementations: deterministic weights and inputs, and the check.

A golden fixture (``tests/models/golden/<name>.json``) holds only numbers: the outputs that a
model's official code gave, in eval mode, for the weights :func:`fill_parameters` writes and the
batch :func:`golden_batch` makes. It was produced once by running the official repository in a
scratch folder (weights copied into the reference model by a key mapping kept there); no reference
code enters this repository. The test rebuilds our model with the fixture's settings, fills the
same weights, runs the same batch and compares.

Fixture keys: ``model`` (registered name), ``source`` (repository, commit and file of the reference),
``settings`` (constructor hyper-parameters; {} = our defaults), ``sizes`` (``n_bins``, ``path_dim``,
``omic_dim``, ``group_sizes``), ``bag_size``, ``seed`` (weights and inputs), optional ``renamed_keys``
(a part of today's state-dict key → what it read when the fixture was made: the weights are seeded
by key name, so a renamed submodule seeds by its old name), ``outputs`` (name → nested
list; at least ``logits``, 1×K; CLAM's fixtures add ``instance_loss``, 1×K: the instance-clustering
loss with each bin as the patient's label), ``tolerance`` (absolute, default 1e-5), ``notes`` (free text: what
the reference run had to set to match our defaults, and why).
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch
from torch import nn

from mmsurv.models import Batch, ModelInputs, build_model

GOLDEN_DIR = Path(__file__).parent / "golden"


def _generator(seed: int, name: str) -> torch.Generator:
    """One generator per tensor name: the values do not depend on the order of the state dict."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(name.encode()))


def fill_parameters(model: nn.Module, seed: int = 0, renamed_keys: dict[str, str] | None = None) -> nn.Module:
    """Overwrite every parameter (and BatchNorm running statistics) with seeded values.

    Weights (≥ 2-D) are N(0, 1/fan_in), vectors N(0, 0.1²), LayerNorm/BatchNorm scales 1 + N(0, 0.1²),
    running variances in [0.5, 1.5): a scale at which every activation stays in its useful range, so
    a wrong layer shows in the output. Call it the same way on the reference side."""
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point():
                continue
            is_param = isinstance(tensor, nn.Parameter)
            if not is_param and not name.endswith(("running_mean", "running_var")):
                continue  # constant buffers (masks, positions) keep their values
            seed_name = name
            for today, then in (renamed_keys or {}).items():
                seed_name = seed_name.replace(today, then)
            g = _generator(seed, seed_name)
            values = torch.randn(tensor.shape, generator=g, dtype=torch.float64)
            if name.endswith("running_var"):
                values = 0.5 + torch.rand(tensor.shape, generator=g, dtype=torch.float64)
            elif tensor.dim() >= 2:
                values = values / math.sqrt(max(1, tensor[0].numel()))
            elif _is_norm_scale(model, name):
                values = 1.0 + 0.1 * values
            else:
                values = 0.1 * values
            tensor.copy_(values.to(tensor.dtype))
    return model


def _is_norm_scale(model: nn.Module, name: str) -> bool:
    if not name.endswith(".weight"):
        return False
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm))


def golden_batch(model, bag_size: int, seed: int = 0) -> Batch:
    """The model's example batch (its declared inputs) at ``bag_size`` patches, seeded."""
    return model.example_batch(bag_size=bag_size, seed=seed)


def load_fixture(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def build_from_fixture(fixture: dict) -> nn.Module:
    sizes = dict(fixture["sizes"])
    inputs = ModelInputs(n_bins=sizes.get("n_bins", 4), path_dim=sizes.get("path_dim", 1024),
                         omic_dim=sizes.get("omic_dim", 0), group_sizes=list(sizes.get("group_sizes") or []),
                         group_names=list(sizes.get("group_names") or []))
    torch.manual_seed(0)
    model = build_model(fixture["model"], inputs, fixture.get("settings", {}))
    return fill_parameters(model, fixture.get("seed", 0), fixture.get("renamed_keys")).eval()


def run_fixture(fixture: dict) -> dict[str, torch.Tensor]:
    """Our model's outputs for the fixture's weights and batch (eval mode, no gradients)."""
    model = build_from_fixture(fixture)
    batch = golden_batch(model, fixture["bag_size"], fixture.get("seed", 0))
    with torch.no_grad():
        output = model(batch)
        outputs = {"logits": output.logits.double()}
        if "instance_loss" in fixture["outputs"]:  # CLAM: the instance-clustering loss for each bin as the label
            outputs["instance_loss"] = torch.stack(
                [model.instance_loss(output.attention_raw, output.features, label) for label in range(model.n_bins)]
            ).double().unsqueeze(0)
    return outputs
