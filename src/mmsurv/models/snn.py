"""SNN: the self-normalising genomic baseline of MCAT (Klambauer et al., NeurIPS 2017).

MCAT's ``SNN`` (models/model_genomic.py of mahmoodlab/MCAT): a stack of blocks
``Linear → ELU → AlphaDropout(0.25)`` over ALL genomic columns (scaled), then a linear classifier
to the hazard logits; every ``Linear`` is initialised N(0, 1/fan_in) with zero bias (MCAT's
``init_max_weights``, the LeCun-normal init that self-normalising networks need).

Defaults (MCAT, ``model_size_omic='small'``): ``hidden=(256, 256, 256, 256)``, ``dropout=0.25``,
``activation='elu'``. Note: MCAT's released code uses ELU inside ``SNN_Block`` although
Klambauer et al.'s SNN uses SELU; ``activation='selu'`` gives the latter. (The ``[256, 256]``
block stack is what MCAT uses for each signature group inside MCAT, see :mod:`mmsurv.models.mcat`.)
The released class cannot be built as it stands: its ``__init__`` calls ``super(MaxNet, self)``, a
name models/model_genomic.py does not define (NameError); with that name bound to ``SNN`` its outputs
equal ours (tests/models/golden/snn.json, MCAT@b9cca63).
"""

from __future__ import annotations

import math

from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel, require
from mmsurv.models.registry import register_model

ACTIVATIONS = {"elu": nn.ELU, "selu": nn.SELU}


def snn_block(in_dim: int, out_dim: int, dropout: float = 0.25, activation: str = "elu") -> nn.Sequential:
    """``Linear → ELU (or SELU) → AlphaDropout``: MCAT's ``SNN_Block``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"SNN activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return nn.Sequential(nn.Linear(in_dim, out_dim), ACTIVATIONS[activation](), nn.AlphaDropout(p=dropout))


def snn_encoder(in_dim: int, hidden, dropout: float = 0.25, activation: str = "elu") -> nn.Sequential:
    """Blocks ``in_dim → hidden[0] → … → hidden[-1]``."""
    dims = [in_dim, *hidden]
    return nn.Sequential(*(snn_block(a, b, dropout, activation) for a, b in zip(dims[:-1], dims[1:])))


def lecun_normal_init(module: nn.Module) -> None:
    """Every ``nn.Linear``: weight ~ N(0, 1/fan_in), bias 0 (MCAT's ``init_max_weights``)."""
    for layer in module.modules():
        if type(layer) is nn.Linear:
            nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(layer.weight.size(1)) if layer.weight.size(1) else 1.0)
            nn.init.zeros_(layer.bias)


@register_model("snn", display="SNN", citation="Klambauer et al., NeurIPS 2017 (MCAT's SNN, Chen et al., ICCV 2021)")
class SNN(SurvivalModel):
    """Genomic-only self-normalising network (MCAT's ``SNN``, ``model_size_omic='small'``)."""

    inputs = ("omic",)
    batchable = True
    defaults = {"training": {"l1_reg": 1e-4}}

    def __init__(self, *, omic_dim: int, n_bins: int = 4, hidden: tuple[int, ...] = (256, 256, 256, 256),
                 dropout: float = 0.25, activation: str = "elu", **sizes):
        super().__init__(n_bins=n_bins, omic_dim=omic_dim, **sizes)
        if omic_dim < 1:
            raise ValueError("SNN needs at least one genomic column")
        self.encoder = snn_encoder(omic_dim, list(hidden), dropout, activation)
        self.classifier = nn.Linear(list(hidden)[-1], n_bins)
        lecun_normal_init(self)

    def forward(self, batch: Batch) -> ModelOutput:
        omic = require(batch.omic, "genomic vector (omic)", "SNN")
        return ModelOutput(logits=self.classifier(self.encoder(omic)))
