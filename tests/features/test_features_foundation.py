"""Foundation-model encoders (mmsurv.features.foundation): built with random weights, loaded from a
state dict saved in each model's released key layout through the real loader, wrong files refused."""

import shutil

import pytest
import torch

from mmsurv.features.encoders import WeightsError, available_encoders, build_encoder
from mmsurv.features.foundation import SPECS

pytest.importorskip("timm")

SMALL = ["ctranspath", "conch_v1", "conch_v1_proj", "uni", "phikon_v2"]
GIANT = ["uni2_h", "virchow2", "h_optimus_0", "gigapath"]  # 0.6-1.1 B parameters: ~30 s each here
PARAMETERS_M = {"ctranspath": 27.5, "conch_v1": 87.8, "uni": 303.4, "phikon_v2": 303.4, "uni2_h": 681.4,
                "virchow2": 631.2, "h_optimus_0": 1134.8, "gigapath": 1135.0}


def released_state(name: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s weights in the key layout of the model's released checkpoint (written by hand from
    the released layouts, independently of the loader's conversion)."""
    state = dict(module.state_dict())
    if name.startswith("conch"):
        out = {"visual." + key: value for key, value in state.items()}
        out.update({"visual.attn_pool_caption.query": torch.zeros(256, 768), "visual.ln_caption.weight": torch.ones(768),
                    "text.token_embedding.weight": torch.zeros(8, 4), "logit_scale": torch.tensor(1.0)})
        return out
    if name == "ctranspath":
        out = {}
        for key, value in state.items():
            key = key.removeprefix("trunk.")
            parts = key.split(".")
            if parts[0] == "layers" and parts[2] == "downsample":  # timm 0.5: merging at the END of the stage before
                key = ".".join(["layers", str(int(parts[1]) - 1), *parts[2:]])
            out[key] = value
        out["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
        out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.int64)
        return out
    if name == "phikon_v2":
        return phikon_hf_state(state)
    return {key.removeprefix("trunk."): value for key, value in state.items()}


def phikon_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"embeddings.cls_token": state["trunk.cls_token"], "embeddings.mask_token": torch.zeros(1, 1024),
           "embeddings.position_embeddings": state["trunk.pos_embed"],
           "embeddings.patch_embeddings.projection.weight": state["trunk.patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": state["trunk.patch_embed.proj.bias"],
           "layernorm.weight": state["trunk.norm.weight"], "layernorm.bias": state["trunk.norm.bias"]}
    for block in range(24):
        ours, hf = f"trunk.blocks.{block}.", f"encoder.layer.{block}."
        for kind in ("weight", "bias"):
            query, key, value = state[ours + f"attn.qkv.{kind}"].chunk(3)
            out.update({hf + f"attention.attention.query.{kind}": query, hf + f"attention.attention.key.{kind}": key,
                        hf + f"attention.attention.value.{kind}": value,
                        hf + f"attention.output.dense.{kind}": state[ours + f"attn.proj.{kind}"],
                        hf + f"norm1.{kind}": state[ours + f"norm1.{kind}"], hf + f"norm2.{kind}": state[ours + f"norm2.{kind}"],
                        hf + f"mlp.fc1.{kind}": state[ours + f"mlp.fc1.{kind}"],
                        hf + f"mlp.fc2.{kind}": state[ours + f"mlp.fc2.{kind}"]})
        out[hf + "layer_scale1.lambda1"] = state[ours + "ls1.gamma"]
        out[hf + "layer_scale2.lambda1"] = state[ours + "ls2.gamma"]
    return out


def check_round_trip(name, tmp_path, *, safetensors: bool):
    random = build_encoder(name, "none", seed=3)
    spec = SPECS[name]
    assert random.out_dim == spec.out_dim and not random.info.pretrained and random.info.compiles == spec.compiles
    assert sum(p.numel() for p in random.module.parameters()) / 1e6 == pytest.approx(PARAMETERS_M.get(name, 87.8),
                                                                                        abs=0.05)
    state = released_state(name, random.module)
    if safetensors:
        from safetensors.torch import save_file

        folder = tmp_path / name
        folder.mkdir()
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
        weights = folder
    else:
        weights = tmp_path / f"{name}.bin"
        torch.save(state, weights)
    del state
    loaded = build_encoder(name, weights)
    shutil.rmtree(weights) if weights.is_dir() else weights.unlink()  # up to 4.5 GB: not kept for the session
    size = spec.preprocessing.input_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = random.module(x), loaded.module(x)
    assert got.shape == (2, spec.out_dim) and got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    assert loaded.info.pretrained and loaded.info.weights_id.startswith("sha256 ")


def test_every_foundation_encoder_is_registered_with_its_settings():
    assert set(SPECS) <= set(available_encoders()) and "resnet50_trunc" in available_encoders()
    assert {SPECS[n].out_dim for n in SPECS} == {512, 768, 1024, 1536, 2560}
    assert SPECS["conch_v1"].preprocessing.input_size == 448 and SPECS["gigapath"].preprocessing.resize_side == 256
    assert [name for name, spec in SPECS.items() if spec.compiles] == ["ctranspath"]  # ViTs: measured slower compiled
    assert all(spec.patching.magnification and spec.patching.patch_size and spec.licence and spec.obtain
               for spec in SPECS.values())


def test_every_encoder_has_a_patching_preset_and_null_settings_take_it():
    from mmsurv.features.presets import ENCODER_PRESETS, patching_for

    assert set(ENCODER_PRESETS) == {*SPECS, "resnet50_trunc"} and set(ENCODER_PRESETS) <= set(available_encoders())
    assert patching_for({"preset": "tcga", "patch_size": None}, "uni") == {"preset": "tcga", "patch_size": 256,
                                                                           "magnification": 20}
    assert patching_for({"patch_size": 512, "magnification": None}, "uni") == {"patch_size": 512, "magnification": 20}
    assert patching_for({}, "resnet50_trunc") == {"magnification": 20, "patch_size": 512}


@pytest.mark.parametrize("name", SMALL)
def test_a_released_state_dict_loads_and_gives_the_same_features(name, tmp_path):
    check_round_trip(name, tmp_path, safetensors=name == "phikon_v2")


@pytest.mark.slow
@pytest.mark.parametrize("name", GIANT)
def test_a_released_state_dict_of_a_giant_encoder_loads_and_gives_the_same_features(name, tmp_path):
    check_round_trip(name, tmp_path, safetensors=True)


def test_a_wrong_checkpoint_fails_naming_the_keys(tmp_path):
    conch = build_encoder("ctranspath", "none")
    path = tmp_path / "ctranspath_as_uni.bin"
    torch.save(released_state("ctranspath", conch.module), path)
    with pytest.raises(WeightsError, match=r"missing keys \(trunk\.blocks\.0\..*unexpected keys \(trunk\.layers\."):
        build_encoder("uni", path)
    state = released_state("uni", build_encoder("uni", "none").module)
    state["pos_embed"] = state["pos_embed"][:, :50]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"shape mismatch for trunk\.pos_embed"):
        build_encoder("uni", path)
    path.unlink()


def test_no_weights_are_downloaded(tmp_path):
    with pytest.raises(WeightsError, match="no 'imagenet' weights.*huggingface.co/MahmoodLab/UNI"):
        build_encoder("uni", "imagenet")
    with pytest.raises(WeightsError, match="nothing is downloaded"):
        build_encoder("uni", tmp_path / "absent.bin")
    with pytest.raises(WeightsError, match="holds none of pytorch_model.bin"):
        build_encoder("uni", tmp_path)


def test_phikon_v2_equals_the_transformers_dinov2_model(tmp_path):
    # The released Phikon-v2 is a Hugging Face Dinov2Model: a random one saved as released loads into
    # our timm ViT and gives its class token.
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                       intermediate_size=4096, image_size=224, patch_size=16, layerscale_value=1e-5)
    torch.manual_seed(0)
    reference = transformers.Dinov2Model(config).eval()
    with torch.no_grad():
        for block in reference.encoder.layer:  # layer scales away from 1e-5, so that blocks matter
            block.layer_scale1.lambda1.uniform_(0.5, 1.0)
            block.layer_scale2.lambda1.uniform_(0.5, 1.0)
    reference.save_pretrained(tmp_path / "phikon-v2", safe_serialization=True)
    ours = build_encoder("phikon_v2", tmp_path / "phikon-v2")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        want = reference(pixel_values=x).last_hidden_state[:, 0]
        got = ours.module(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_ctranspath_equals_the_timm_ctp_model_its_checkpoint_was_made_with(tmp_path):
    # CHIEF's CTransPath checkpoint is a timm 0.5.4 (timm_ctp) Swin-T with a convolutional stem; a
    # random one saved as {"model": state_dict} gives the same features through our loader.
    timm_ctp = pytest.importorskip("timm_ctp")
    from torch import nn

    class TokenConvStem(nn.Module):  # the stem as timm 0.5's Swin takes it: B×N×C tokens
        def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None, flatten=True):
            super().__init__()
            side = img_size[0] if isinstance(img_size, tuple) else img_size
            self.img_size, self.patch_size = (side, side), (patch_size, patch_size)
            self.grid_size = (side // patch_size, side // patch_size)
            self.num_patches = self.grid_size[0] * self.grid_size[1]
            width = embed_dim // 8
            self.proj = nn.Sequential(
                nn.Conv2d(in_chans, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
                nn.Conv2d(2 * width, embed_dim, 1))
            self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

        def forward(self, x):
            return self.norm(self.proj(x).flatten(2).transpose(1, 2))

    torch.manual_seed(0)
    reference = timm_ctp.create_model("swin_tiny_patch4_window7_224", embed_layer=TokenConvStem, pretrained=False)
    reference.head = nn.Identity()
    reference.eval()
    with torch.no_grad():
        for module in reference.modules():  # running statistics that matter
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    torch.save({"model": reference.state_dict()}, tmp_path / "CHIEF_CTransPath.pth")
    ours = build_encoder("ctranspath", tmp_path / "CHIEF_CTransPath.pth")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(ours.module(x), reference(x))
