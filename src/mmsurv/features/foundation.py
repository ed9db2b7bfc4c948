"""Patch encoders of pathology foundation models, built with timm and loaded from local checkpoints.

For a researcher who extracts features with today's encoders instead of ResNet50-trunc (which stays
the default and the founding papers' features). Each encoder is registered in
:mod:`mmsurv.features.encoders` under its name (``features.encoder`` in the config, ``--encoder`` on
the command line) with its released architecture settings, input size, interpolation and
normalisation, its output (class token, class token + mean patch token, or CONCH's attentional
pooling), the magnification and patch size its authors extract at (:data:`SPECS`), and its licence.

**Weights are read from local files only** (``features.weights``: the released file, or the folder it
came in). Nothing is downloaded: every checkpoint below is gated or licensed and has to be obtained
by the user (the README lists where). The loader takes the released key layout — timm's for UNI,
UNI2-h, Virchow2, H-optimus-0 and Prov-GigaPath; the whole CoCa model for CONCH (its ``visual.*``
keys are used, the text tower ignored); Hugging Face ``Dinov2Model`` for Phikon-v2; CHIEF's timm-0.5
Swin for CTransPath — in ``.bin``/``.pth`` (torch) or ``.safetensors``, maps it onto the module and
fails naming the missing, unexpected or mis-shaped keys. ``weights: none`` gives seeded random
weights (the offline demo; recorded as ``pretrained: false``).

Architecture settings are those of the authors' model cards and of TRIDENT's loaders
(``trident/patch_encoder_models/load.py``), read as reference:

=============  ==========================================  =====  ==============  ===========  =======================
name           architecture (timm)                          dim    input           patches      licence
=============  ==========================================  =====  ==============  ===========  =======================
uni            ViT-L/16, layer scale, class token          1024   224 bilinear    256 px, 20×  CC-BY-NC-ND 4.0 (gated)
uni2_h         ViT-H/14 1536-wide, SwiGLU, 8 registers     1536   224 bilinear    256 px, 20×  CC-BY-NC-ND 4.0 (gated)
conch_v1       ViT-B/16 + attentional pooler (+ proj)      512    448 bicubic*    512 px, 20×  CC-BY-NC-ND 4.0 (gated)
virchow2       ViT-H/14, SwiGLU, 4 registers, cls+mean     2560   224 bicubic     224 px, 20×  CC-BY-NC-ND 4.0 (gated)
h_optimus_0    ViT-g/14, SwiGLU, 4 registers               1536   224 bilinear**  224 px, 20×  Apache 2.0
gigapath       ViT-g/16, SwiGLU                            1536   256 → 224 crop  256 px, 20×  Apache 2.0 + terms (gated)
phikon_v2      ViT-L/16 (DINOv2; Hugging Face layout)      1024   224 bilinear    224 px, 20×  Owkin non-commercial
ctranspath     Swin-T with convolutional stem              768    224 bilinear    224 px, 20×  GPL-3.0
=============  ==========================================  =====  ==============  ===========  =======================

(* OpenAI CLIP mean/std; ** H-optimus' own mean/std; the others ImageNet's.) ``conch_v1`` is CONCH's
``encode_image(proj_contrast=False, normalize=False)``, what its README recommends for MIL features;
``conch_v1_proj`` adds the contrastive projection. Antialiased resizing throughout (torchvision's
``Resize`` on tensors, which the released transforms apply to PIL images, antialiases too).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mmsurv.features.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    EncoderInfo,
    Preprocessing,
    WeightsError,
    load_trunk_state,
    read_checkpoint,
    register_encoder,
    sha256_file,
)
from mmsurv.features.presets import ENCODER_PRESETS, PatchPreset

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
# file names of a released folder, in order of preference
RELEASED_FILES = ("pytorch_model.bin", "model.safetensors", "pytorch_model.safetensors")


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------

class ViTFeatures(nn.Module):
    """A timm ViT's final (normalised) tokens pooled as its authors do: ``cls`` (the class token) or
    ``cls+mean`` (class token concatenated with the mean of the patch tokens, register tokens excluded:
    Virchow2)."""

    def __init__(self, trunk: nn.Module, pool: str = "cls"):
        super().__init__()
        if pool not in ("cls", "cls+mean"):
            raise ValueError(f"ViTFeatures: pool must be 'cls' or 'cls+mean', got {pool!r}")
        self.trunk, self.pool = trunk, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)
        if self.pool == "cls":
            return tokens[:, 0]
        return torch.cat([tokens[:, 0], tokens[:, self.trunk.num_prefix_tokens:].mean(dim=1)], dim=-1)


class AttentionalPooler(nn.Module):
    """CoCa's attentional pooler as CONCH's vision tower has it: ``n_queries`` learnt queries
    (LayerNorm ``ln_q``) attend over the LayerNorm-ed (``ln_k``) tokens with multi-head attention
    whose keys and values have the tokens' width."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim, batch_first=True)
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keys = self.ln_k(tokens)
        queries = self.ln_q(self.query).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return self.attn(queries, keys, keys, need_weights=False)[0]


class ConchVision(nn.Module):
    """CONCH v1's image encoder: ViT-B/16 at 448 px (all final tokens) → the contrastive attentional
    pooler (one query, 512-d) → LayerNorm, and with ``project`` the contrastive projection
    (512 × 512). Without it this is CONCH's ``encode_image(proj_contrast=False, normalize=False)``."""

    def __init__(self, trunk: nn.Module, project: bool):
        super().__init__()
        self.trunk = trunk
        self.attn_pool_contrast = AttentionalPooler(512, trunk.embed_dim, n_head=8, n_queries=1)
        self.ln_contrast = nn.LayerNorm(512)
        self.proj_contrast = nn.Parameter(trunk.embed_dim ** -0.5 * torch.randn(512, 512))
        self.project = project

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.ln_contrast(self.attn_pool_contrast(self.trunk.forward_features(x))[:, 0])
        return pooled @ self.proj_contrast if self.project else pooled


class ConvStem(nn.Module):
    """CTransPath's patch embedding: two 3×3 stride-2 convolutions (BatchNorm, ReLU) and a 1×1
    convolution to the embedding width, then LayerNorm; NHWC out, as timm's Swin expects."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None, **_):
        super().__init__()
        if patch_size != 4:
            raise ValueError("ConvStem: CTransPath's stem has patch size 4")
        width = embed_dim // 8
        self.grid_size = (img_size // patch_size, img_size // patch_size)  # what timm's Swin reads
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, embed_dim, 1))
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinFeatures(nn.Module):
    """timm's Swin with its final LayerNorm and average pooling (``num_classes=0``): 768-d."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


# ------------------------------------------------------------------------------------------------
# Architectures (timm) and released key layouts
# ------------------------------------------------------------------------------------------------

def _vit(**kwargs) -> nn.Module:
    import timm

    return timm.models.vision_transformer.VisionTransformer(num_classes=0, **kwargs)


def _swiglu() -> dict:
    import timm

    return {"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": nn.SiLU}


def uni() -> nn.Module:
    return ViTFeatures(_vit(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16,
                            init_values=1e-5, dynamic_img_size=True))


def uni2_h() -> nn.Module:
    return ViTFeatures(_vit(img_size=224, patch_size=14, embed_dim=1536, depth=24, num_heads=24, init_values=1e-5,
                            mlp_ratio=2.66667 * 2, no_embed_class=True, reg_tokens=8, dynamic_img_size=True,
                            **_swiglu()))


def virchow2() -> nn.Module:
    return ViTFeatures(_vit(img_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16, init_values=1e-5,
                            mlp_ratio=5.3375, reg_tokens=4, dynamic_img_size=True, **_swiglu()), pool="cls+mean")


def h_optimus_0() -> nn.Module:
    # timm's vit_giant_patch14_reg4_dinov2: ViT-g/14, 1536 wide, 40 blocks, 24 heads, SwiGLU, 4 registers
    return ViTFeatures(_vit(img_size=224, patch_size=14, embed_dim=1536, depth=40, num_heads=24, init_values=1e-5,
                            mlp_ratio=2.66667 * 2, reg_tokens=4, no_embed_class=True, dynamic_img_size=True,
                            **_swiglu()))


def gigapath() -> nn.Module:
    # Prov-GigaPath tile encoder: timm vit_giant_patch14_dinov2 (SwiGLU) with patch size 16 at 224 px
    return ViTFeatures(_vit(img_size=224, patch_size=16, embed_dim=1536, depth=40, num_heads=24, init_values=1e-5,
                            mlp_ratio=5.33334, **_swiglu()))


def phikon_v2() -> nn.Module:
    return ViTFeatures(_vit(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16, init_values=1e-5,
                            dynamic_img_size=True))


def conch_v1(project: bool = False) -> nn.Module:
    return ConchVision(_vit(img_size=448, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                            dynamic_img_size=True), project=project)


def ctranspath() -> nn.Module:
    import timm

    return SwinFeatures(timm.models.swin_transformer.SwinTransformer(
        img_size=224, patch_size=4, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
        embed_layer=ConvStem, num_classes=0))


def with_prefix(prefix: str) -> Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """A released timm state dict → our module's keys (the model sits under ``prefix``)."""
    def convert(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {prefix + key: value for key, value in state.items()}
    return convert


def from_conch(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CONCH's CoCa checkpoint → :class:`ConchVision`: the ``visual.*`` keys of the image tower minus
    the caption pooler; the text tower and ``logit_scale`` are not used."""
    unused = ("visual.attn_pool_caption.", "visual.ln_caption.")
    return {key.removeprefix("visual."): value for key, value in state.items()
            if key.startswith("visual.") and not key.startswith(unused)}


_DINOV2_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_DINOV2_RENAMES = {"norm1": "norm1", "norm2": "norm2", "attention.output.dense": "attn.proj", "mlp.fc1": "mlp.fc1",
                   "mlp.fc2": "mlp.fc2"}


def from_hf_dinov2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``Dinov2Model`` keys (Phikon-v2) → timm's VisionTransformer under ``trunk.``:
    query/key/value stacked into ``qkv``, ``layer_scale*.lambda1`` → ``ls*.gamma``; the mask token
    (masked pre-training only) is dropped."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    top = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
           "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
           "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
    for key, value in state.items():
        key = key.removeprefix("dinov2.")
        if key == "embeddings.mask_token":
            continue
        if key in top:
            out["trunk." + top[key]] = value
            continue
        match = _DINOV2_LAYER.match(key)
        if match is None:
            out[key] = value  # unexpected: reported by the loader
            continue
        block, rest = int(match.group(1)), match.group(2)
        prefix = f"trunk.blocks.{block}."
        if rest.startswith("attention.attention."):
            part, kind = rest.removeprefix("attention.attention.").split(".", 1)
            qkv.setdefault((block, kind), {})[part] = value
        elif rest.startswith("layer_scale") and rest.endswith(".lambda1"):
            out[prefix + f"ls{rest[len('layer_scale')]}.gamma"] = value
        else:
            module, _, kind = rest.rpartition(".")
            out[prefix + f"{_DINOV2_RENAMES.get(module, module)}.{kind}"] = value
    for (block, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            missing = sorted({"query", "key", "value"} - set(parts))
            raise WeightsError(f"Dinov2 checkpoint: block {block} lacks attention.attention.{missing[0]}.{kind}")
        out[f"trunk.blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


_OLD_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")


def from_chief_swin(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CHIEF's CTransPath checkpoint (timm 0.5 Swin: each stage's patch merging at its END) → timm 1.x
    (at the START of the next stage) under ``trunk.``; the recomputed buffers (``attn_mask``,
    ``relative_position_index``) and a classification ``head`` are dropped."""
    out = {}
    for key, value in state.items():
        if key.endswith(("attn_mask", "relative_position_index")) or key.startswith("head."):
            continue
        match = _OLD_DOWNSAMPLE.match(key)
        if match:
            key = f"layers.{int(match.group(1)) + 1}.downsample.{match.group(2)}"
        out["trunk." + key] = value
    return out


# ------------------------------------------------------------------------------------------------
# The encoders
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FoundationSpec:
    """One registered foundation-model encoder."""

    name: str
    display: str
    build: Callable[[], nn.Module]
    out_dim: int
    preprocessing: Preprocessing
    released_layout: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]
    obtain: str               # where the checkpoint comes from
    licence: str
    version: int = 1          # bump when a change of this code changes the features
    # compiling measured to help (bench/extract.py, 64 patches, bf16 on AMX, AOT vs eager): CTransPath
    # 32.7 → 42.3 patches/s; UNI 9.1 → 6.8 (slower), so the ViTs are never compiled
    compiles: bool = False

    @property
    def patching(self) -> PatchPreset:
        """The magnification and patch side its authors extract at (:mod:`mmsurv.features.presets`)."""
        return ENCODER_PRESETS[self.name]


def _prep(size: int, interpolation: str = "bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
          resize: int | None = None) -> Preprocessing:
    return Preprocessing(input_size=size, interpolation=interpolation, antialias=True, mean=mean, std=std,
                         resize_size=resize)


SPECS: dict[str, FoundationSpec] = {spec.name: spec for spec in (
    FoundationSpec(
        "uni", "UNI (ViT-L/16)", uni, 1024, _prep(224), with_prefix("trunk."),
        "huggingface.co/MahmoodLab/UNI, pytorch_model.bin (gated: accept the terms with an institutional account)",
        "CC-BY-NC-ND 4.0, non-commercial academic research"),
    FoundationSpec(
        "uni2_h", "UNI2-h (ViT-H/14, SwiGLU, 8 registers)", uni2_h, 1536, _prep(224),
        with_prefix("trunk."), "huggingface.co/MahmoodLab/UNI2-h, pytorch_model.bin (gated)",
        "CC-BY-NC-ND 4.0, non-commercial academic research"),
    FoundationSpec(
        "conch_v1", "CONCH v1 (ViT-B/16 at 448 px, attentional pooling)", conch_v1, 512,
        _prep(448, "bicubic", OPENAI_MEAN, OPENAI_STD), from_conch,
        "huggingface.co/MahmoodLab/CONCH, pytorch_model.bin (gated)",
        "CC-BY-NC-ND 4.0, non-commercial academic research"),
    FoundationSpec(
        "conch_v1_proj", "CONCH v1 with the contrastive projection", lambda: conch_v1(project=True), 512,
        _prep(448, "bicubic", OPENAI_MEAN, OPENAI_STD), from_conch,
        "huggingface.co/MahmoodLab/CONCH, pytorch_model.bin (gated)",
        "CC-BY-NC-ND 4.0, non-commercial academic research"),
    FoundationSpec(
        "virchow2", "Virchow2 (ViT-H/14, class + mean patch token)", virchow2, 2560, _prep(224, "bicubic"),
        with_prefix("trunk."), "huggingface.co/paige-ai/Virchow2, pytorch_model.bin (gated)",
        "CC-BY-NC-ND 4.0, non-commercial research"),
    FoundationSpec(
        "h_optimus_0", "H-optimus-0 (ViT-g/14, 4 registers)", h_optimus_0, 1536,
        _prep(224, "bilinear", HOPTIMUS_MEAN, HOPTIMUS_STD), with_prefix("trunk."),
        "huggingface.co/bioptimus/H-optimus-0, pytorch_model.bin", "Apache 2.0"),
    FoundationSpec(
        "gigapath", "Prov-GigaPath tile encoder (ViT-g/16)", gigapath, 1536, _prep(224, "bicubic", resize=256),
        with_prefix("trunk."), "huggingface.co/prov-gigapath/prov-gigapath, pytorch_model.bin (gated)",
        "Apache 2.0 with terms of use (research only)"),
    FoundationSpec(
        "phikon_v2", "Phikon-v2 (ViT-L/16, DINOv2)", phikon_v2, 1024, _prep(224), from_hf_dinov2,
        "huggingface.co/owkin/phikon-v2, model.safetensors (its folder)", "Owkin non-commercial licence"),
    FoundationSpec(
        "ctranspath", "CTransPath (Swin-T, convolutional stem)", ctranspath, 768, _prep(224),
        from_chief_swin, "CHIEF_CTransPath.pth (huggingface.co/datasets/MahmoodLab/hest-bench, fm_v1/ctranspath)",
        "GPL-3.0 (the CTransPath code)", compiles=True),
)}


def released_file(weights: str, spec: FoundationSpec) -> Path:
    """The checkpoint file of ``weights``: the file itself, or in a released folder the first of
    :data:`RELEASED_FILES` present."""
    path = Path(weights).expanduser()
    if path.is_dir():
        for name in RELEASED_FILES:
            if (path / name).is_file():
                return path / name
        raise WeightsError(f"{spec.name}: folder {path} holds none of {', '.join(RELEASED_FILES)} "
                           f"(the checkpoint comes from {spec.obtain})")
    if not path.is_file():
        raise WeightsError(f"{spec.name}: weights {weights!r} are neither 'none' nor an existing checkpoint file or "
                           f"folder; nothing is downloaded: get it from {spec.obtain}")
    return path


def read_released(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(os.fspath(path), device="cpu")
        except Exception as error:  # noqa: BLE001 - safetensors raises several kinds for bad files
            raise WeightsError(f"checkpoint {path}: cannot be read as safetensors ({error})") from error
    return read_checkpoint(path)


def load_released(spec: FoundationSpec, weights: str) -> tuple[nn.Module, str]:
    """``spec``'s module with the released checkpoint at ``weights``; → (module, sha256 of the file)."""
    path = released_file(weights, spec)
    state = spec.released_layout(read_released(path))
    with torch.device("meta"):
        module = spec.build()
    load_trunk_state(module, state, f"{path} ({spec.name})", allowed_extra=(), assign=True)
    if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):  # non-persistent buffers: build for real
        module = spec.build()
        load_trunk_state(module, state, f"{path} ({spec.name})", allowed_extra=())
    return module, sha256_file(path)


def _factory(spec: FoundationSpec) -> Callable[[str, int], Encoder]:
    def make(weights: str, seed: int) -> Encoder:
        if weights == "none":
            log.warning("WARNING: %s with RANDOM weights (seed %d): NOT %s features; fine for the offline demo "
                        "only, recorded as pretrained=false", spec.name, seed, spec.display)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = spec.build()
            detail, kind, identity = f"random initialisation (torch seed {seed}); NOT pretrained", "none", \
                f"random seed {seed}"
        elif weights == "imagenet":
            raise WeightsError(f"{spec.name} has no 'imagenet' weights: give its released checkpoint (a local file "
                               f"or folder; {spec.obtain}) or 'none'")
        else:
            module, digest = load_released(spec, weights)
            identity = f"sha256 {digest}"
            detail, kind = f"checkpoint {weights} ({identity})", "checkpoint"
        info = EncoderInfo(spec.name, kind, detail, kind != "none", spec.preprocessing, weights_id=identity,
                           version=spec.version, compiles=spec.compiles)
        return Encoder(module.float(), spec.out_dim, info)

    make.__doc__ = f"{spec.display}: {spec.out_dim}-d; licence: {spec.licence}; weights: {spec.obtain}."
    return make


for _spec in SPECS.values():
    register_encoder(_spec.name)(_factory(_spec))
