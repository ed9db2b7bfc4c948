"""PORPOISE MMF: reference sizes (class and main.py defaults) and its gated, skip-connected fusion."""

from __future__ import annotations

import torch
from torch import nn

from mmsurv.models import ModelInputs, build_model, n_params

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
BLCA = ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS, path_dim=1024, n_bins=4)
TINY = ModelInputs(omic_dim=50, group_sizes=[3, 7, 5], path_dim=32, n_bins=4)
MAIN_PY = {"gate_path": False, "gate_omic": False, "skip": False, "dropinput": 0.0}

torch.set_num_threads(1)


def test_parameter_counts_beside_the_reference():
    assert n_params(build_model("porpoise_mmf", BLCA)) == 2_381_765  # class defaults: gates, skip, dropinput 0.1
    # main.py defaults: the reference builds 2,250,693 of which the two gates (32,832) never get a gradient.
    assert n_params(build_model("porpoise_mmf", BLCA, MAIN_PY)) == 2_250_693 - 32_832
    # the size of abmil_kp's ungated variant (which adds MCAT's parameter-free encoder dropouts)
    assert n_params(build_model("porpoise_mmf", BLCA, MAIN_PY)) == n_params(build_model("abmil_kp", BLCA, {"fusion": "kronecker"}))


def test_reference_layout():
    model = build_model("porpoise_mmf", BLCA)
    first = next(iter(model.dropinput.modules()))
    assert isinstance(first, nn.Dropout) and first.p == 0.1
    fusion = model.fusion
    assert fusion.path_gate.in_features == 512 and fusion.path_gate.out_features == 32
    assert fusion.encoder1[0].in_features == 33 * 33
    assert fusion.encoder2[0].in_features == 256 + 2 * 256  # skip connection: both 256-d embeddings appended


def test_gates_and_both_branches_learn():
    torch.manual_seed(0)
    model = build_model("porpoise_mmf", TINY).train()
    output = model(model.example_batch(bag_size=15))
    sum(model.loss(output, model.example_target()).values()).backward()
    for parameter in (model.fusion.path_gate.weight, model.fusion.omic_gate.weight, model.path_branch.fc[0].weight,
                      model.omic_branch[0][0].weight, model.fusion.encoder2[0].weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
