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

from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel, require
from mmsurv.models.layers import lecun_normal_init, snn_encoder
from mmsurv.models.registry import register_model


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
