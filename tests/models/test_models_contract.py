"""The model forward contract, the registry, parameter counts (MCAT ≈ 4.49 M) and FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsurv.models import Batch, ModelInputs, available_models, build_model, count_flops, model_spec, n_params
from mmsurv.models.snn import SNN

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
INPUTS = ModelInputs(omic_dim=50, group_sizes=[3, 7, 5], path_dim=32, n_bins=4)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registry_lists_models_and_modalities():
    assert {"snn", "abmil", "mcat"} <= set(available_models())
    assert {name: model_spec(name).modality for name in ("snn", "abmil", "mcat")} == {
        "snn": "omic", "abmil": "path", "mcat": "multimodal"}


def test_mcat_parameter_count_matches_reference_on_blca():
    model = build_model("mcat", ModelInputs(group_sizes=BLCA_GROUPS))
    assert n_params(model) == pytest.approx(4.49e6, rel=0.01)
    assert n_params(model) == 4_492_038


@pytest.mark.parametrize("name", ["snn", "abmil", "mcat"])
def test_forward_contract(name):
    torch.manual_seed(0)
    model = build_model(name, INPUTS).eval()
    output = model(model.example_batch(bag_size=17))
    assert output.logits.shape == (1, 4)
    survival = output.survival
    assert torch.all(survival[:, 1:] <= survival[:, :-1]) and torch.all((survival > 0) & (survival < 1))
    assert output.risk.shape == (1,) and output.aux_loss is None
    if model.modality != "omic":  # a case without patches gets a single zero vector
        empty = Batch(path=torch.zeros(1, INPUTS.path_dim), omic=torch.zeros(50), omic_groups=[torch.zeros(s) for s in INPUTS.group_sizes])
        assert torch.isfinite(model(empty).logits).all()
        assert output.attention["path"].shape[-1] in (17, len(INPUTS.group_sizes))


def test_missing_input_is_a_clear_error():
    model = build_model("abmil", INPUTS)
    with pytest.raises(ValueError, match="ABMIL: the batch has no WSI feature bag"):
        model(Batch(omic=torch.zeros(50)))
    mcat = build_model("mcat", INPUTS)
    with pytest.raises(ValueError, match="built for 3 genomic groups"):
        mcat(Batch(path=torch.zeros(2, 32), omic_groups=[torch.zeros(3)]))


def test_overrides_are_checked():
    small = build_model("mcat", INPUTS, {"embed_dim": 64, "omic_hidden": [64, 64], "ff_dim": 128})
    assert n_params(small) < n_params(build_model("mcat", INPUTS))
    with pytest.raises(ValueError, match="unknown parameter.*embeddim"):
        build_model("mcat", INPUTS, {"embeddim": 64})
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", INPUTS)


def test_snn_reference_shape_and_init():
    torch.manual_seed(0)
    model = SNN(omic_dim=2000)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2000, 256), (256, 256), (256, 256), (256, 256), (256, 4)]
    assert all(isinstance(block[1], nn.ELU) and isinstance(block[2], nn.AlphaDropout) for block in model.encoder)
    first = linears[0].weight
    assert first.std().item() == pytest.approx(1 / 2000 ** 0.5, rel=0.05) and linears[0].bias.abs().sum() == 0


def test_abmil_reference_sizes():
    model = build_model("abmil", ModelInputs())
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(1024, 512), (512, 256), (512, 256), (256, 1), (512, 256), (256, 4)]


def test_flops_grow_with_bag_size():
    model = build_model("abmil", ModelInputs())
    small, large = count_flops(model, 100), count_flops(model, 1000)
    assert small > 0 and large == pytest.approx(10 * small, rel=0.05)
    assert count_flops(build_model("snn", ModelInputs(omic_dim=100)), 10) == 2 * (100 * 256 + 3 * 256 * 256 + 256 * 4)
