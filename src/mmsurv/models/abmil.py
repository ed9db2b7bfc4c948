"""ABMIL: gated-attention multiple-instance learning over a patient's patch bag (WSI only).

Ilse et al., "Attention-based Deep Multiple Instance Learning", ICML 2018, in the CLAM/MCAT
variant MCAT reports as "AttnMIL" (``MIL_Attention_FC_surv``, models/model_set_mil.py of
mahmoodlab/MCAT, ``size_arg='small'``, no genomic fusion):

``h = Dropout(ReLU(Linear(1024 → 512)))`` per patch; gated attention
``a = w^T (tanh(V h) ⊙ sigmoid(U h))`` with hidden size 256 and dropout 0.25 on both branches;
softmax over patches; attention-weighted sum (1×512); ``rho = Dropout(ReLU(Linear(512 → 256)))``;
``Linear(256 → n_bins)`` hazard logits. PyTorch default initialisation (MCAT does not re-initialise).

Defaults: ``hidden_dim=512``, ``attention_dim=256``, ``out_dim=256``, ``dropout=0.25``
(``hidden_dim=256`` gives the lighter 1024→256 variant).
"""

from __future__ import annotations

from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import GatedAttention, attention_pool
from mmsurv.models.registry import register_model


@register_model("abmil", display="ABMIL", citation="Ilse et al., ICML 2018")
class ABMIL(SurvivalModel):
    """Gated-attention MIL survival model (MCAT's AttnMIL, WSI only)."""

    inputs = ("path",)
    embedding_head = "classifier"
    patch_score_kind = "gated attention weight (softmax over the bag)"
    patch_score_key = "path"

    def __init__(self, *, path_dim: int = 1024, n_bins: int = 4, hidden_dim: int = 512, attention_dim: int = 256,
                 out_dim: int = 256, dropout: float = 0.25, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, **sizes)
        self.fc = nn.Sequential(nn.Linear(path_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(hidden_dim, attention_dim, dropout)
        self.rho = nn.Sequential(nn.Linear(hidden_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(out_dim, n_bins)

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "ABMIL")
        h = self.fc(path)
        pooled, weights = attention_pool(self.attention(h), h)
        return ModelOutput(logits=self.classifier(self.rho(pooled)), attention={"path": weights.detach()})

