"""The encoder registry and ResNet50-trunc: architecture, weights sources and their errors."""

from __future__ import annotations

import logging
import urllib.error

import pytest
import torch
import torchvision

from mmsurv.features.encoders import (
    Encoder,
    EncoderInfo,
    Preprocessing,
    ResNet50Trunc,
    WeightsError,
    available_encoders,
    build_encoder,
    register_encoder,
)


@pytest.fixture(scope="module")
def images():
    """Two normalised-looking inputs (fixed seed); 96 px keeps these structural tests fast."""
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def resnet50_state():
    """State dict of a full torchvision ResNet50 with a fixed seed (stands in for trained weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        return torchvision.models.resnet50(weights=None).state_dict()


@pytest.fixture(scope="module")
def random_features(images):
    model, _, _ = build_encoder("resnet50_trunc", "none", seed=0)
    with torch.inference_mode():
        return model(images)


def test_trunk_is_torchvision_resnet50_up_to_layer3(images, random_features, resnet50_state):
    """Same keys and shapes as torchvision's ResNet50 minus layer4/fc; the CLAM forward: layer3 + avg pool."""
    full = torchvision.models.resnet50(weights=None)
    full.load_state_dict(resnet50_state)
    trunk = ResNet50Trunc()
    expected = {k: v.shape for k, v in resnet50_state.items() if not k.startswith(("layer4.", "fc."))}
    assert {k: v.shape for k, v in trunk.state_dict().items()} == expected
    assert random_features.shape == (2, 1024) and random_features.dtype == torch.float32

    trunk.load_state_dict({k: v for k, v in resnet50_state.items() if k in expected})
    full.eval(), trunk.eval()
    with torch.inference_mode():
        x = images
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"):
            x = getattr(full, name)(x)
        reference = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        torch.testing.assert_close(trunk(images), reference)


def test_registry_builds_and_reports(caplog):
    assert "resnet50_trunc" in available_encoders()
    with caplog.at_level(logging.WARNING):
        encoder = build_encoder("resnet50_trunc", "none", seed=3)
    module, out_dim, info = encoder
    assert out_dim == 1024 and not module.training
    assert info.weights == "none" and info.pretrained is False and "seed 3" in info.weights_detail
    assert info.preprocessing == Preprocessing(224, "bilinear", True, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert any(r.levelno == logging.WARNING and "RANDOM weights" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="unknown encoder 'nope'.*resnet50_trunc"):
        build_encoder("nope", "none")


def test_register_a_custom_encoder():
    @register_encoder("tiny_test_encoder")
    def _tiny(weights: str, seed: int) -> Encoder:
        module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        return Encoder(module, 3, EncoderInfo("tiny_test_encoder", weights, "test", False, Preprocessing(32)))

    module, dim, info = build_encoder("tiny_test_encoder", "none")
    assert dim == 3 and info.preprocessing.input_size == 32
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("tiny_test_encoder")(lambda weights, seed: None)


def test_random_init_is_seeded(images, random_features):
    again, _, _ = build_encoder("resnet50_trunc", "none", seed=0)
    other, _, _ = build_encoder("resnet50_trunc", "none", seed=1)
    with torch.inference_mode():
        assert torch.equal(again(images), random_features)
        assert not torch.allclose(other(images), random_features)


@pytest.mark.parametrize("kind", ["full", "trunk_wrapped"])
def test_checkpoint_loads_and_changes_features(kind, tmp_path, images, random_features, resnet50_state):
    """torch.save-d weights load: a full torchvision ResNet50, or a trunk-only state dict wrapped as
    ``{"state_dict": {"module.<key>": ...}}`` (DataParallel-style training checkpoint)."""
    state = dict(resnet50_state)
    if kind == "trunk_wrapped":
        trunk = {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}
        state = {"state_dict": {f"module.{k}": v for k, v in trunk.items()}, "epoch": 3}
    path = tmp_path / f"resnet50_{kind}.pth"
    torch.save(state, path)

    module, _, info = build_encoder("resnet50_trunc", path)
    assert info.weights == "checkpoint" and info.pretrained and str(path) in info.weights_detail
    assert torch.equal(module.layer3[5].conv3.weight, resnet50_state["layer3.5.conv3.weight"])
    with torch.inference_mode():
        features = module(images)
    assert features.shape == (2, 1024)
    assert not torch.allclose(features, random_features, atol=1e-3)


def test_checkpoint_is_strict_on_trunk_keys(tmp_path):
    state = ResNet50Trunc().state_dict()
    missing = dict(state)
    missing.pop("layer3.5.bn3.running_var")
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="1 missing keys.*layer3.5.bn3.running_var"):
        build_encoder("resnet50_trunc", tmp_path / "missing.pth")

    torch.save({**state, "head.weight": torch.zeros(2)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match="unexpected keys.*head.weight"):
        build_encoder("resnet50_trunc", tmp_path / "extra.pth")

    torch.save({**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match="shape mismatch for conv1.weight"):
        build_encoder("resnet50_trunc", tmp_path / "shape.pth")

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot be read"):
        build_encoder("resnet50_trunc", tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="neither 'imagenet' nor 'none' nor an existing checkpoint"):
        build_encoder("resnet50_trunc", tmp_path / "absent.pth")


def test_imagenet_offline_error_says_what_to_do(tmp_path, monkeypatch):
    """The real IMAGENET1K_V1 code path runs; without the cached file and network the error is actionable."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as error:
        build_encoder("resnet50_trunc", "imagenet")
    message = str(error.value)
    assert "weights not in torch hub cache" in message
    assert "download on a connected machine or pass a local checkpoint path" in message
    assert "resnet50-0676ba61.pth" in message
