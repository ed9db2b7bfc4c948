"""MCAT: Multimodal Co-Attention Transformer (Chen et al., ICCV 2021), WSI bag + genomic groups.

Architecture of the reference code (``MCAT_Surv`` in models/model_coattn.py of mahmoodlab/MCAT,
``fusion='concat'``, ``model_size_wsi='small'``, ``model_size_omic='small'``):

1. patch features: ``Dropout(ReLU(Linear(1024 → 256)))``, N×256;
2. one SNN encoder per genomic group (the 6 MCAT signature families, or pathways):
   blocks ``Linear → ELU → AlphaDropout(0.25)`` with sizes ``[256, 256]`` → G×256 tokens;
3. genomic-guided co-attention: ``nn.MultiheadAttention(256, 1 head)`` with the G genomic tokens as
   queries and the N patch tokens as keys/values → G×256 "co-attended" WSI tokens;
4. a WSI and a genomic transformer, each 2 × ``TransformerEncoderLayer(d_model=256, nhead=8,
   dim_feedforward=512, dropout=0.25, relu)``;
5. gated attention pooling (256 → 256 hidden, dropout 0.25) of each token set, then
   ``rho = Dropout(ReLU(Linear(256 → 256)))``;
6. concat fusion ``ReLU(Linear(512 → 256)) → ReLU(Linear(256 → 256))`` and ``Linear(256 → n_bins)``.

On the BLCA group sizes [94, 334, 521, 468, 1496, 479] this has 4,492,038 parameters (≈ 4.49 M),
layer for layer the reference's. Overridable: ``embed_dim`` (256), ``omic_hidden`` ([256, 256]),
``n_heads_coattn`` (1), ``n_heads`` (8), ``ff_dim`` (512), ``n_layers`` (2), ``dropout`` (0.25).
Attention maps (co-attention G×N, WSI and genomic pooling weights) are returned in
``ModelOutput.attention``.
"""

from __future__ import annotations

import torch
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.layers import AttentionReadout, snn_encoder, transformer
from mmsurv.models.registry import register_model


@register_model("mcat", display="MCAT", citation="Chen et al., ICCV 2021")
class MCAT(SurvivalModel):
    """Genomic-guided co-attention transformer over a WSI bag and genomic groups."""

    inputs = ("path", "omic_groups")
    patch_score_kind = "genomic-guided co-attention (one row per genomic group, softmax over the bag)"
    patch_score_key = "coattn"
    defaults = {"data": {"groups": "signatures"}}

    def __init__(self, *, group_sizes: list[int], path_dim: int = 1024, n_bins: int = 4, embed_dim: int = 256,
                 omic_hidden: tuple[int, ...] = (256, 256), n_heads_coattn: int = 1, n_heads: int = 8,
                 ff_dim: int = 512, n_layers: int = 2, dropout: float = 0.25, **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, group_sizes=group_sizes, **sizes)
        if not group_sizes:
            raise ValueError("MCAT needs at least one genomic group")
        omic_hidden = list(omic_hidden)
        if omic_hidden[-1] != embed_dim:
            raise ValueError(f"MCAT: omic_hidden must end with embed_dim ({embed_dim}), got {omic_hidden}")
        self.path_fc = nn.Sequential(nn.Linear(path_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout))
        self.omic_encoders = nn.ModuleList(snn_encoder(size, omic_hidden, 0.25) for size in group_sizes)
        self.coattn = nn.MultiheadAttention(embed_dim, n_heads_coattn, batch_first=True)
        self.path_transformer = transformer(embed_dim, n_heads, ff_dim, dropout, n_layers)
        self.omic_transformer = transformer(embed_dim, n_heads, ff_dim, dropout, n_layers)
        self.path_readout = AttentionReadout(embed_dim, dropout)
        self.omic_readout = AttentionReadout(embed_dim, dropout)
        self.fusion = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.ReLU(),
                                    nn.Linear(embed_dim, embed_dim), nn.ReLU())
        self.classifier = nn.Linear(embed_dim, n_bins)

    def forward(self, batch: Batch) -> ModelOutput:
        path = batch.one("path", "MCAT")
        groups = batch.one_groups("MCAT", len(self.omic_encoders))
        h_path = self.path_fc(path).unsqueeze(0)  # 1×N×E
        h_omic = torch.stack([encoder(group) for encoder, group in zip(self.omic_encoders, groups)]).unsqueeze(0)
        coattended, coattn = self.coattn(h_omic, h_path, h_path)  # 1×G×E, 1×G×N
        path_vec, path_weights = self.path_readout(self.path_transformer(coattended)[0])
        omic_vec, omic_weights = self.omic_readout(self.omic_transformer(h_omic)[0])
        fused = self.fusion(torch.cat([path_vec, omic_vec], dim=1))
        attention = {"coattn": coattn[0].detach(), "path": path_weights.detach(), "omic": omic_weights.detach()}
        return ModelOutput(logits=self.classifier(fused), attention=attention)

