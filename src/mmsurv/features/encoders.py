"""Patch encoders for feature extraction: a small registry and the CLAM/MCAT ResNet50 trunk.

Who uses this: ``mmsurv.features.extract`` (the per-slide extraction behind the Snakemake rule and
``mmsurv features extract``) and anyone adding an encoder (e.g. a pathology foundation model loaded
from a local checkpoint): decorate a factory with ``@register_encoder("name")``; it receives the
weights specification and returns an ``Encoder``.

The pathology foundation models (UNI, UNI2-h, CONCH v1, Virchow2, H-optimus-0, Prov-GigaPath,
Phikon-v2, CTransPath) are registered by :mod:`mmsurv.features.foundation`, imported on first use of
the registry.

``resnet50_trunc`` is the encoder of CLAM and MCAT: torchvision's ResNet50 cut after ``layer3``
(conv1, bn1, relu, maxpool, layer1, layer2, layer3), then ``AdaptiveAvgPool2d(1)`` and flatten, i.e.
1024 features per 224x224 patch. Its parameter names are torchvision's, so a full torchvision
ResNet50 state dict loads by dropping ``layer4.*`` and ``fc.*``.

Weights (``weights=``):

* ``"imagenet"``: torchvision ``ResNet50_Weights.IMAGENET1K_V1`` (what CLAM used; the default for real
  runs). Taken from the torch hub cache (``$TORCH_HOME/hub/checkpoints``), downloaded there if the
  machine is online; offline without the file it fails with a message saying what to do.
* a path: a ``torch.save``-d state dict of a full torchvision ResNet50 or of the truncated trunk
  (optionally wrapped in ``{"state_dict": ...}`` / ``{"model": ...}``, optionally with DataParallel's
  ``module.`` prefix). Every trunk parameter/buffer must be present with the right shape; the only
  extra keys accepted are the ``layer4.*``/``fc.*`` of a full ResNet50.
* ``"none"``: seeded random initialisation for the offline demo. Logged as a WARNING and recorded
  (``pretrained: false``) in every output's metadata so reports can say so.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_KEYWORDS = ("imagenet", "none")
# Extra keys a full torchvision ResNet50 checkpoint has beyond the truncated trunk.
RESNET_EXTRA_PREFIXES = ("layer4.", "fc.")
CHECKPOINT_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
RESNET50_TRUNC_VERSION = 1  # bump when a change of ResNet50Trunc's code changes its features


class WeightsError(RuntimeError):
    """Encoder weights are unavailable or do not fit the encoder."""


@dataclass(frozen=True)
class Preprocessing:
    """How a patch read from the slide becomes the encoder's input tensor."""

    input_size: int = 224                      # square side fed to the network
    interpolation: str = "bilinear"            # torch.nn.functional.interpolate mode
    antialias: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN   # on the [0, 1] scale
    std: tuple[float, float, float] = IMAGENET_STD
    # resize to this side, then take the central input_size square (torchvision Resize + CenterCrop,
    # e.g. Prov-GigaPath's 256 → 224); None: resize straight to input_size
    resize_size: int | None = None

    @property
    def resize_side(self) -> int:
        return self.resize_size or self.input_size


@dataclass(frozen=True)
class EncoderInfo:
    """What was built: goes into every output's metadata."""

    name: str
    weights: str            # "imagenet", "none" or "checkpoint"
    weights_detail: str     # human-readable source (weights enum, file + sha256, random seed)
    pretrained: bool
    preprocessing: Preprocessing
    # What makes the numbers, for the reuse check of existing features: the weights' identity
    # (never a path: a checkpoint by its sha256) and the encoder code's version (bump it when a code
    # change alters the features). Empty ``weights_id``: ``weights_detail`` stands for it.
    weights_id: str = ""
    version: int = 1
    # whether compiling was measured to speed this encoder up (bench/extract.py); False: always eager
    compiles: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


class Encoder(NamedTuple):
    """``build_encoder``'s result: unpacks as ``module, out_dim, info``."""

    module: nn.Module
    out_dim: int
    info: EncoderInfo


EncoderFactory = Callable[[str, int], Encoder]
_REGISTRY: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator: make ``factory(weights: str, seed: int) -> Encoder`` available as ``name``."""

    def decorate(factory: EncoderFactory) -> EncoderFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"encoder {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def _register_families() -> None:
    """Import the modules that register further encoders (:mod:`mmsurv.features.foundation`)."""
    import mmsurv.features.foundation  # noqa: F401 - registers on import


def available_encoders() -> list[str]:
    _register_families()
    return sorted(_REGISTRY)


def build_encoder(name: str, weights: str | os.PathLike = "imagenet", *, seed: int = 0) -> Encoder:
    """Build encoder ``name`` in eval mode on the CPU with ``weights`` ("imagenet", "none" or a path)."""
    if name not in _REGISTRY:
        _register_families()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(available_encoders())}") from None
    encoder = factory(os.fspath(weights), seed)
    encoder.module.eval().requires_grad_(False)
    return encoder


# ------------------------------------------------------------------------------------------------
# ResNet50 truncated after layer3 (CLAM / MCAT)
# ------------------------------------------------------------------------------------------------

class ResNet50Trunc(nn.Module):
    """torchvision ResNet50 up to ``layer3`` + global average pooling: (B, 3, H, W) -> (B, 1024).

    Built from torchvision's ``Bottleneck`` blocks exactly as ``torchvision.models.resnet50`` builds
    them (same submodule names, so state-dict keys are interchangeable) but without ``layer4``/``fc``,
    whose random initialisation would cost more than the whole trunk's. Random init follows
    torchvision's (Kaiming-normal convs, unit BN).
    """

    out_dim = 1024

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        from torchvision.models.resnet import Bottleneck

        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.pool(x), 1)


@register_encoder("resnet50_trunc")
def _resnet50_trunc(weights: str, seed: int) -> Encoder:
    if weights == "none":
        model = _random_trunk(seed)
        detail = f"random initialisation (torch seed {seed}); NOT pretrained"
        kind, pretrained, identity = "none", False, f"random seed {seed}"
    elif weights == "imagenet":
        model = _trunk_from_state(imagenet_resnet50_state(), "torchvision ResNet50_Weights.IMAGENET1K_V1")
        detail, kind, pretrained = "torchvision ResNet50_Weights.IMAGENET1K_V1", "imagenet", True
        identity = "torchvision ResNet50_Weights.IMAGENET1K_V1"
    else:
        path = _checkpoint_path(weights)
        model = _trunk_from_state(read_checkpoint(path), os.fspath(path))
        identity = f"sha256 {sha256_file(path)}"
        detail = f"checkpoint {path} ({identity})"
        kind, pretrained = "checkpoint", True
    info = EncoderInfo("resnet50_trunc", kind, detail, pretrained, Preprocessing(), weights_id=identity,
                       version=RESNET50_TRUNC_VERSION)
    return Encoder(model, ResNet50Trunc.out_dim, info)


def _random_trunk(seed: int) -> ResNet50Trunc:
    log.warning("WARNING: resnet50_trunc with RANDOM weights (seed %d): features are NOT ImageNet features; "
                "fine for the offline demo only, recorded as pretrained=false", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNet50Trunc()


def _trunk_from_state(state: Mapping[str, torch.Tensor], source: str) -> ResNet50Trunc:
    """The trunk with ``state`` loaded (built on the meta device: no wasted random init)."""
    with torch.device("meta"):
        model = ResNet50Trunc()
    load_trunk_state(model, state, source, assign=True)
    return model


def imagenet_resnet50_state() -> dict[str, torch.Tensor]:
    """The IMAGENET1K_V1 state dict from the torch hub cache (downloading it when online)."""
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.exists():
        log.info("ResNet50 IMAGENET1K_V1 weights not in %s; trying to download %s", cached.parent, weights.url)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # noqa: BLE001 - any download failure gets the same advice
        raise WeightsError(
            f"ResNet50 ImageNet weights not in torch hub cache ({cached}) and they could not be downloaded "
            f"({type(error).__name__}: {error}); download on a connected machine or pass a local checkpoint "
            f"path (--weights PATH; e.g. torch.save(torchvision.models.resnet50(weights='IMAGENET1K_V1')"
            f".state_dict(), PATH)), or --weights none for a random-init demo"
        ) from error


def _checkpoint_path(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights {weights!r} are neither {' nor '.join(map(repr, WEIGHTS_KEYWORDS))} "
                           f"nor an existing checkpoint file")
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: unwraps ``{"state_dict": ...}``-style files and ``module.`` prefixes."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for bad files
        raise WeightsError(f"checkpoint {path}: cannot be read as a torch state dict ({error})") from error
    for key in CHECKPOINT_WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"checkpoint {path}: not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def load_trunk_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                     allowed_extra: tuple[str, ...] = RESNET_EXTRA_PREFIXES, *, assign: bool = False) -> None:
    """Load ``state`` strictly on ``model``'s keys; extra keys only under ``allowed_extra`` prefixes.

    ``assign=True`` adopts the tensors (for a model built on the meta device).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) if not k.startswith(allowed_extra))
    wrong_shape = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_few(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
    if wrong_shape:
        problems.append(f"shape mismatch for {_few(wrong_shape)}")
    if problems:
        raise WeightsError(f"weights {source} do not fit {type(model).__name__}: {'; '.join(problems)}")
    trunk_state = {k: state[k].to(torch.float32) if state[k].is_floating_point() else state[k] for k in expected}
    model.load_state_dict(trunk_state, strict=True, assign=assign)


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def sha256_file(path: str | os.PathLike, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
