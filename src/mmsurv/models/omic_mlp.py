"""OmicMLP: the genomic MLP baseline of SurvPath (Jaume et al., CVPR 2024), genomics only.

Architecture of the official code (``MLPOmics`` in models/model_MLPOmics.py of mahmoodlab/SurvPath,
built by its ``main.py`` with ``projection_dim=64`` and ``dropout=args.encoder_dropout`` = 0.25):
``Linear(G → 32) → ReLU → Dropout → Linear(32 → 32) → ReLU → Dropout → Linear(32 → n_bins)``
over every genomic column (scaled on the training fold); hidden width ``projection_dim // 2``.
(The issue calls it a 4-layer MLP; the reference has three ``Linear`` layers, which we follow.)

Parameters at the reference setting (3,392 inputs, 4 bins): 109,764, equal to the reference (tested).
PyTorch default initialisation (the reference does not re-initialise).

Training defaults: SurvPath's script for this model (scripts/omics.sh): RAdam, lr 5e-4, weight
decay 1e-4 applied to the weights directly (SurvPath's RAdam: ``p ← p − lr·wd·p`` on every
parameter, ``decoupled_weight_decay: true``), NLL with α = 0.5, batch 1, class-weighted sampling,
one step per patient (no gradient accumulation), SurvPath's default schedule: cosine with one
epoch of linear warm-up, stepped after every optimiser step (``scheduler_interval: step``,
``warmup_epochs: 1``; Hugging Face's ``get_cosine_schedule_with_warmup`` there); 20 epochs
(SurvPath's default ``max_epochs``; the script shows 5).

Measured on the real MCAT tables (5 folds, last epoch, mean ± population std), trained exactly as
``bench/train.py`` part 2 trains the SNN (MCAT's SNN settings: Adam, lr 2e-4, weight decay 1e-5,
20 epochs, accumulation 32, α 0, L1 1e-4, class-balanced sampling, seed 1, no scheduler; 1 thread),
not with this model's SurvPath defaults: BLCA 0.5611 ± 0.0458 (SNN 0.5480 ± 0.0204), LUAD
0.5652 ± 0.0282 (SNN 0.5556 ± 0.0448); 0.25–0.31 s per epoch.

Departures: no hard-coded GPU placement; SurvPath feeds its own transcriptomics table (Xena RNA of the pathway
genes); here it reads the cohort's genomic vector (``omic``), whatever its columns.
"""

from __future__ import annotations

from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel, require
from mmsurv.models.registry import register_model


@register_model("omic_mlp", display="OmicMLP", citation="Jaume et al., CVPR 2024 (SurvPath's MLPOmics)")
class OmicMLP(SurvivalModel):
    """Two hidden ReLU layers over the genomic vector (SurvPath's ``MLPOmics``)."""

    inputs = ("omic",)
    batchable = True
    defaults = {"training": {"optimizer": "radam", "lr": 5e-4, "weight_decay": 1e-4, "decoupled_weight_decay": True,
                             "alpha": 0.5, "grad_accum": 1, "scheduler": "cosine", "scheduler_interval": "step",
                             "warmup_epochs": 1, "epochs": 20}}

    def __init__(self, *, omic_dim: int, n_bins: int = 4, projection_dim: int = 64, dropout: float = 0.25, **sizes):
        super().__init__(n_bins=n_bins, omic_dim=omic_dim, **sizes)
        if omic_dim < 1:
            raise ValueError("OmicMLP needs at least one genomic column")
        hidden = projection_dim // 2
        self.net = nn.Sequential(nn.Linear(omic_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, n_bins)

    def forward(self, batch: Batch) -> ModelOutput:
        omic = require(batch.omic, "genomic vector (omic)", "OmicMLP")
        return ModelOutput(logits=self.classifier(self.net(omic)))
