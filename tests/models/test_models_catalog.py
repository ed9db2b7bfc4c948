"""The catalog (model modules read as source, no torch) agrees with the registry, and the workflow's
parse-time checks import no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmsurv.models.registry import available_models, known_models, model_spec

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tests/fixtures/coord_probe_model.py"


def test_every_builtin_model_describes_itself_statically():
    found = known_models()
    assert found.static, f"a model module is not readable without importing it: {found.reason}"
    assert found.names() == available_models()


@pytest.mark.parametrize("name", available_models())
def test_catalog_entry_equals_the_registry_spec(name):
    entry, spec = known_models().get(name), model_spec(name)
    assert entry.inputs == spec.inputs and entry.modality == spec.modality and entry.batchable == spec.batchable
    assert entry.defaults == spec.defaults
    assert entry.display_name == spec.display_name and entry.citation == spec.citation
    registry_parameters = spec.parameters()
    assert set(entry.parameters()) == set(registry_parameters)
    for key, value in entry.parameters().items():
        expected = registry_parameters[key]
        if isinstance(expected, (int, float, str, bool, type(None), tuple, list, dict)):
            assert value == expected, f"{name}.{key}"


def test_plugins_are_read_too_and_unknown_sources_fall_back_to_the_registry(tmp_path, monkeypatch):
    from mmsurv.models import registry

    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))  # the plugin registers for this test only
    found = known_models([PLUGIN])
    assert found.static and found.get("coord_probe").inputs == ("path", "coords", "omic_groups:pathways")
    builder = tmp_path / "builder_style.py"
    builder.write_text(
        "from mmsurv.models.registry import register_model\n"
        "from mmsurv.models.snn import SNN\n"
        "@register_model('snn_built', SNN)\n"
        "def build(inputs, **params):\n"
        "    return SNN(omic_dim=inputs.omic_dim, **params)\n")
    fallback = known_models([builder])
    assert not fallback.static and "builder-style" in fallback.reason
    assert "snn_built" in fallback.names() and fallback.get("snn_built").modality == "omic"


def test_parsing_the_workflow_imports_no_torch(tmp_path):
    """``snakemake -n`` on the demo config: the Snakefile and its checks never import torch."""
    snakemake = Path(sys.executable).parent / "snakemake"
    result = subprocess.run([sys.executable, "-X", "importtime", str(snakemake), "-s", str(REPO / "Snakefile"),
                             "-d", str(tmp_path), "--configfile", str(REPO / "config/config.yaml"), "-n"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert "mmsurv.models.catalog" in imported and "mmsurv.models.registry" in imported
    assert "torch" not in imported and "sksurv" not in imported


def test_the_contract_vocabulary_and_the_catalog_import_no_torch_and_no_registry():
    """The source catalog stands below the registry (no circle): reading it imports neither."""
    code = ("import sys, mmsurv.models.catalog, mmsurv.models.inputs, mmsurv.models.registry\n"
            "print(sorted(m for m in ('torch', 'mmsurv.models.base') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_sweeps_expand_into_one_variant_per_value():
    from mmsurv.models.catalog import expand_models, expand_sweeps, with_sweeps

    sweeps = {"tokens": {"model": "cancermoe", "param": "n_tokens", "values": [1024, 2048]},
              "drop": {"model": "snn", "param": "dropout", "values": [0.1, 0.25], "training": {"epochs": 3}}}
    expanded = expand_sweeps(sweeps)
    assert expanded["tokens"] == {"tokens_1024": {"model": "cancermoe", "n_tokens": 1024},
                                  "tokens_2048": {"model": "cancermoe", "n_tokens": 2048}}
    assert expanded["drop"]["drop_0p1"] == {"model": "snn", "dropout": 0.1, "training": {"epochs": 3}}
    listed, section = with_sweeps(["snn", "tokens"], {"snn_selu": {"model": "snn", "activation": "selu"}}, sweeps)
    assert listed == ["snn", "tokens_1024", "tokens_2048"]
    assert set(section) == {"snn_selu", "tokens_1024", "tokens_2048", "drop_0p1", "drop_0p25"}
    assert expand_models("all", section, ["snn", "cancermoe"]) == [
        "snn", "cancermoe", "drop_0p1", "drop_0p25", "snn_selu", "tokens_1024", "tokens_2048"]
    with pytest.raises(ValueError, match="train.sweeps.bad: needs model, param, values"):
        expand_sweeps({"bad": {"model": "snn", "values": [1]}})
    with pytest.raises(ValueError, match="also defined in train.models"):
        with_sweeps("all", {"tokens_1024": {"model": "cancermoe"}}, sweeps)


def test_variants_inherit_their_base_section_and_their_own_keys_win():
    from mmsurv.models.catalog import inherit_base_sections

    models = {"hdmoe": {"adaptive_landmarks": True, "display": "HDMoE*", "training": {"epochs": 3, "lr": 1e-3}},
              "hdmoe_wo_rfr": {"model": "hdmoe", "rfr": False, "training": {"epochs": 5}},
              "snn_selu": {"model": "snn", "activation": "selu"}}
    out = inherit_base_sections(models)
    assert out["hdmoe_wo_rfr"] == {"adaptive_landmarks": True, "training": {"epochs": 5, "lr": 1e-3},
                                   "model": "hdmoe", "rfr": False}
    assert out["snn_selu"] == models["snn_selu"]  # no section of its base: unchanged
    assert out["hdmoe"] == models["hdmoe"]
    assert models["hdmoe_wo_rfr"]["training"] == {"epochs": 5}  # the input is not modified
