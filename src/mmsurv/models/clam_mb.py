"""CLAM-MB: clustering-constrained attention MIL, one attention branch per class (Lu et al., Nat. Biomed. Eng. 2021).

Architecture of the official code (``CLAM_MB`` in models/model_clam.py of mahmoodlab/CLAM,
``gate=True``, ``size_arg='small'``, ``k_sample=8``, dropout 0.25), the classes being the survival
bins: as CLAM-SB (:mod:`mmsurv.models.clam_sb`, whose docstring states the survival adaptation, the
loss mix ``0.7 · NLL + 0.3 · instance CE`` and the handling of bags smaller than ``2k``), except

* the gated attention has ``n_bins`` outputs: bin ``c`` pools its own slide vector
  ``M_c = Σ_i softmax(a_c)_i h_i``;
* bin ``c``'s hazard logit is its own ``Linear(512 → 1)`` on ``M_c`` (CLAM's per-class bag
  classifiers; stored as the rows of one ``512 → n_bins`` weight, the same parameters);
* the instance classifier of the patient's bin ``y`` takes the top/bottom ``k`` patches of branch
  ``y``'s attention (and, with ``subtyping=True``, bin ``c``'s classifier the top ``k`` of branch ``c``).

Parameters at the reference setting (1024-d, 4 bins): 794,640, equal to the official ``CLAM_MB``
with ``n_classes=4`` (tested). The scorer's ``n_bins`` biases never get a gradient (each softmax
ignores a shift of its row): kept for the count match.

Training defaults and instance loss: CLAM-SB's (``main.py``'s lr 1e-4 and CE instance loss; the
README's commands use lr 2e-4 and the smooth top-1 SVM instance loss, ``instance_loss="svm"``: see
:mod:`mmsurv.models.clam_sb`).
"""

from __future__ import annotations

import torch
from torch import nn

from mmsurv.models.clam_sb import CLAMBase
from mmsurv.models.registry import register_model


@register_model("clam_mb", display="CLAM-MB", citation="Lu et al., Nat. Biomed. Eng. 2021")
class CLAMMB(CLAMBase):
    """CLAM with one attention branch and one bag classifier per survival bin (WSI only)."""

    display = "CLAM-MB"
    branches_per_bin = True

    def score_row_names(self, rows: int) -> list[str]:
        """One attention branch per survival bin."""
        return [f"bin {index + 1}" for index in range(rows)]

    def embedding_dim(self, head: nn.Linear) -> int:
        """The slide embedding a late fusion reads once the bag classifiers are removed: one pooled
        vector per bin, flattened (n_bins · hidden)."""
        return head.in_features * self.n_bins

    def bag_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """``pooled``: n_bins × hidden (one slide vector per bin) → 1 × n_bins; without the bag
        classifiers (a late fusion's backbone) the flattened 1 × (n_bins · hidden) embedding."""
        if not isinstance(self.classifier, nn.Linear):
            return pooled.reshape(1, -1)
        return ((pooled * self.classifier.weight).sum(dim=1) + self.classifier.bias).unsqueeze(0)
