"""The model contract over EVERY registered model, the registry, and the reference sizes of SNN/ABMIL/MCAT."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from mmsurv.models import Batch, ModelInputs, available_models, build_model, count_flops, model_spec, n_params
from mmsurv.models.base import SURVIVAL_TERM, Target
from mmsurv.models.inputs import modality_of
from mmsurv.models.registry import expand_models, resolve_model
from mmsurv.models.snn import SNN

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
INPUTS = ModelInputs(omic_dim=50, group_sizes=[3, 7, 5], path_dim=32, n_bins=4, group_names=["g0", "g1", "g2"])
ALL = available_models()



def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, INPUTS)


def test_registry_lists_models_and_labels():
    assert {"snn", "abmil", "mcat"} <= set(ALL)
    assert {name: model_spec(name).label for name in ("snn", "abmil", "mcat")} == {
        "snn": "genomic", "abmil": "pathology", "mcat": "multimodal"}
    for name in ALL:
        spec = model_spec(name)
        assert spec.display_name and spec.citation, f"{name}: display name and citation are required"


def test_modality_is_derived_from_inputs():
    assert modality_of(["omic"]) == "omic" and modality_of(["omic_groups:pathways"]) == "omic"
    assert modality_of(["path", "coords"]) == "path"
    assert modality_of(["coords", "omic_groups"]) == "multimodal"


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_loss_and_risk(name):
    model = build(name).train()
    batch, target = model.example_batch(bag_size=37), model.example_target()
    output = model(batch)
    assert output.logits.shape == (1, INPUTS.n_bins)
    assert output.risk.shape == (1,) and torch.isfinite(output.risk).all()
    terms = model.loss(output, target)
    assert SURVIVAL_TERM in terms and all(torch.isfinite(value) and value.dim() == 0 for value in terms.values())
    sum(terms.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no parameter received a gradient"


ENCODER_DIMS = (512, 768, 1536, 2560)  # CONCH, CTransPath, UNI2-h / H-optimus / GigaPath, Virchow2


@pytest.mark.parametrize("name", [n for n in ALL if model_spec(n).modality != "omic"])
def test_every_wsi_model_trains_on_the_foundation_encoders_dimensions(name):
    for dim in ENCODER_DIMS:
        torch.manual_seed(0)
        model = build_model(name, ModelInputs(omic_dim=50, group_sizes=[3, 7, 5], path_dim=dim, n_bins=4,
                                              group_names=["g0", "g1", "g2"])).train()
        batch = model.example_batch(bag_size=9)
        assert batch.path.shape[-1] == dim
        terms = model.loss(model(batch), model.example_target())
        sum(terms.values()).backward()
        assert all(torch.isfinite(value) for value in terms.values()), f"{name} at {dim}-d"


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output_and_state_dict_round_trip(name):
    first, second = build(name, seed=3).eval(), build(name, seed=3).eval()
    batch = first.example_batch(bag_size=29)
    with torch.no_grad():
        reference = first(batch).logits
        assert torch.equal(reference, second(batch).logits)
        other = build(name, seed=4).eval()
        other.load_state_dict(first.state_dict())
        assert torch.allclose(reference, other(batch).logits, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_flops_countable_and_no_cuda_only_code(name):
    model = build(name)
    assert count_flops(model, bag_size=64) > 0
    source = inspect.getsource(inspect.getmodule(type(model)))
    assert ".cuda()" not in source, f"{name}: device-agnostic code only (no .cuda())"


@pytest.mark.parametrize("name", [n for n in ALL if model_spec(n).modality != "omic"])
def test_a_patient_without_patches_gets_finite_outputs(name):
    model = build(name).eval()
    batch = model.example_batch(bag_size=1)
    batch.values["path"] = torch.zeros_like(batch.values["path"])
    with torch.no_grad():
        assert torch.isfinite(model(batch).logits).all()


@pytest.mark.parametrize("name", [n for n in ALL if model_spec(n).model_class.batchable])
def test_batchable_models_give_each_patient_its_own_output(name):
    model = build(name).eval()
    batch = model.example_batch(bag_size=16, batch_size=3)
    with torch.no_grad():
        together = model(batch).logits
        for row in range(3):
            single = Batch(values={k: ([g[row:row + 1] for g in v] if isinstance(v, list) else v[row:row + 1])
                                   for k, v in batch.values.items()}, size=1)
            assert torch.allclose(together[row], model(single).logits[0], atol=1e-5)


def test_missing_input_is_a_clear_error():
    model = build_model("abmil", INPUTS)
    with pytest.raises(ValueError, match="ABMIL: the batch has no path"):
        model(Batch.single(omic=torch.zeros(50)))
    mcat = build_model("mcat", INPUTS)
    with pytest.raises(ValueError, match="built for 3 genomic groups"):
        mcat(Batch.single(path=torch.zeros(2, 32), omic_groups=[torch.zeros(3)]))


def test_default_loss_adds_auxiliary_terms():
    model = build("snn")
    output = model(model.example_batch())
    output.aux["balance"] = torch.tensor(0.25)
    terms = model.loss(output, Target(torch.tensor([1]), torch.tensor([0.0]), torch.tensor([3.0])))
    assert set(terms) == {SURVIVAL_TERM, "balance"} and float(terms["balance"]) == 0.25


def test_overrides_and_variants_are_checked():
    small = build_model("mcat", INPUTS, {"embed_dim": 64, "omic_hidden": [64, 64], "ff_dim": 128})
    assert n_params(small) < n_params(build_model("mcat", INPUTS))
    with pytest.raises(ValueError, match="unknown parameter.*embeddim"):
        build_model("mcat", INPUTS, {"embeddim": 64})
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", INPUTS)
    variant = resolve_model("mcat_small", {"mcat_small": {"model": "mcat", "embed_dim": 64, "training": {"lr": 1e-3}}})
    assert variant.spec.name == "mcat" and variant.params == {"embed_dim": 64} and variant.training == {"lr": 1e-3}
    assert variant.display_name == "MCAT [mcat_small]"
    with pytest.raises(ValueError, match="train.models.bad: unknown parameter"):
        resolve_model("bad", {"bad": {"model": "mcat", "embeddim": 3}})
    with pytest.raises(ValueError, match="cannot take the name of registered model"):
        resolve_model("snn", {"snn": {"model": "mcat"}})
    names = expand_models("all", {"mcat_small": {"model": "mcat"}, "snn": {"dropout": 0.1}})
    assert names == [*ALL, "mcat_small"]


def test_mcat_parameter_count_matches_reference_on_blca():
    model = build_model("mcat", ModelInputs(group_sizes=BLCA_GROUPS))
    assert n_params(model) == 4_492_038


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
