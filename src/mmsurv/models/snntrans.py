"""SNNTrans: one SNN per genomic group and a transformer over the group tokens, genomics only.

The "SNNTrans" genomic baseline of SurvMamba's comparison (Chen et al., 2024), which gives no code
or sizes; we take every size from MCAT's genomic branch (Chen et al., ICCV 2021, ``MCAT_Surv`` in
models/model_coattn.py of mahmoodlab/MCAT), so that SNNTrans is MCAT without its WSI half:

1. one SNN per genomic group (the 6 MCAT signature families by default, or pathways):
   blocks ``Linear → ELU → AlphaDropout(0.25)`` with sizes ``[256, 256]`` → G tokens of 256;
2. a transformer over the G tokens: 2 × ``TransformerEncoderLayer(d_model=256, nhead=8,
   dim_feedforward=512, dropout=0.25, relu)`` (MCAT's genomic transformer), no positional encoding
   (the groups are a set);
3. gated attention pooling over the tokens (hidden 256, dropout 0.25) and
   ``rho = Dropout(ReLU(Linear(256 → 256)))`` (MCAT's readout);
4. ``Linear(256 → n_bins)`` hazard logits.

On the BLCA signature groups [94, 334, 521, 468, 1496, 479] this has 2,517,509 parameters
(tested; no reference implementation to compare with). PyTorch default initialisation, as MCAT's
genomic branch. Training defaults: the package's (MCAT's: Adam, lr 2e-4, weight decay 1e-5,
gradient accumulation 32, 20 epochs).

Measured on the real MCAT tables (5 folds, last epoch, mean ± population std), trained exactly as
``bench/train.py`` part 2 trains the SNN (MCAT's SNN settings, L1 1e-4 on every weight, 1 thread):
BLCA 0.5118 ± 0.0448 (SNN 0.5480 ± 0.0204), LUAD 0.5440 ± 0.0339 (SNN 0.5556 ± 0.0448); 2.9–4.4 s
per epoch. Below the SNN on both; with 2.5 M parameters for ~300 training patients it is the
larger model trained with the same budget.

Choices and reasons: MCAT's sizes because SurvMamba builds on MCAT's setting (signature groups,
4 bins, NLL) and states none of its own; attention pooling rather than a class token or mean
because MCAT pools its genomic tokens that way. The model is ``batchable`` (all patients have the
same G tokens); the pooling runs per patient.
"""

from __future__ import annotations

import torch
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel, require
from mmsurv.models.layers import AttentionReadout, snn_encoder, transformer
from mmsurv.models.registry import register_model


@register_model("snntrans", display="SNNTrans", citation="SurvMamba's SNNTrans baseline (Chen et al., 2024)")
class SNNTrans(SurvivalModel):
    """Per-group SNNs, a transformer over the group tokens, gated attention pooling."""

    inputs = ("omic_groups",)
    batchable = True
    defaults = {"data": {"groups": "signatures"}}

    def __init__(self, *, group_sizes: list[int], n_bins: int = 4, embed_dim: int = 256,
                 omic_hidden: tuple[int, ...] = (256, 256), n_heads: int = 8, ff_dim: int = 512, n_layers: int = 2,
                 dropout: float = 0.25, **sizes):
        super().__init__(n_bins=n_bins, group_sizes=group_sizes, **sizes)
        if not group_sizes:
            raise ValueError("SNNTrans needs at least one genomic group")
        omic_hidden = list(omic_hidden)
        if omic_hidden[-1] != embed_dim:
            raise ValueError(f"SNNTrans: omic_hidden must end with embed_dim ({embed_dim}), got {omic_hidden}")
        self.omic_encoders = nn.ModuleList(snn_encoder(size, omic_hidden, 0.25) for size in group_sizes)
        self.transformer = transformer(embed_dim, n_heads, ff_dim, dropout, n_layers)
        self.readout = AttentionReadout(embed_dim, dropout)
        self.classifier = nn.Linear(embed_dim, n_bins)

    def forward(self, batch: Batch) -> ModelOutput:
        groups = require(batch.omic_groups, "genomic groups (omic_groups)", "SNNTrans")
        if len(groups) != len(self.omic_encoders):
            raise ValueError(f"SNNTrans: built for {len(self.omic_encoders)} genomic groups, the batch has {len(groups)}")
        tokens = torch.stack([encoder(group) for encoder, group in zip(self.omic_encoders, groups)], dim=1)  # B×G×E
        tokens = self.transformer(tokens)
        pooled, weights = zip(*(self.readout(patient) for patient in tokens))
        return ModelOutput(logits=self.classifier(torch.cat(pooled)),
                           attention={"omic": torch.cat(weights).detach()})
