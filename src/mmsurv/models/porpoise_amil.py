"""PORPOISE AMIL: the gated-attention WSI model of PORPOISE (Chen et al., Cancer Cell 2022), WSI only.

Architecture of the official code (``PorpoiseAMIL`` in models/model_porpoise.py of
mahmoodlab/PORPOISE, ``size_arg='small'``, 4 outputs):

1. ``h = Dropout(ReLU(Linear(path_dim → 512)))``, dropout 0.25;
2. gated attention ``w^T (tanh(V h) ⊙ sigmoid(U h))`` (hidden 256, dropout 0.25 on both branches),
   softmax over the patches, ``M = Σ a_i h_i`` (1×512);
3. ``Linear(512 → n_bins)`` on ``M`` directly: the hazard logits.

Unlike MCAT's AttnMIL (:mod:`mmsurv.models.abmil`) there is no ``rho`` layer (512 → 256) before
the classifier, and every ``Linear`` is initialised Xavier-normal with zero bias (the reference's
``initialize_weights``).

Parameters at the reference setting (1024-d, 4 bins): 789,765, equal to the official
``PorpoiseAMIL`` (tested). As the reference, the scorer's last bias is kept (count match) though it
never gets a gradient (softmax ignores a constant shift; its Xavier init starts it at 0 anyway).

Training defaults: the package's (PORPOISE trains as MCAT: Adam, lr 2e-4, weight decay 1e-5,
batch 1 with gradient accumulation 32, 20 epochs, NLL).

Departures: no hard-coded GPU placement or ``DataParallel`` relocation; nothing else.
"""

from __future__ import annotations

from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import GatedAttention, attention_pool, xavier_init
from mmsurv.models.registry import register_model


@register_model("porpoise_amil", display="PORPOISE AMIL", citation="Chen et al., Cancer Cell 2022")
class PorpoiseAMIL(SurvivalModel):
    """PORPOISE's gated-attention MIL survival model (WSI only)."""

    inputs = ("path",)
    patch_score_kind = "gated attention weight (softmax over the bag)"
    patch_score_key = "path"

    def __init__(self, *, path_dim: int = 1024, n_bins: int = 4, hidden_dim: int = 512, attention_dim: int = 256,
                 dropout: float = 0.25, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, **sizes)
        self.fc = nn.Sequential(nn.Linear(path_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(hidden_dim, attention_dim, dropout)
        self.classifier = nn.Linear(hidden_dim, n_bins)
        xavier_init(self)

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.fc(batch.one("path", "PORPOISE AMIL"))
        pooled, weights = attention_pool(self.attention(h), h)
        return ModelOutput(logits=self.classifier(pooled), attention={"path": weights.detach()})
