"""CLAM-SB: clustering-constrained attention MIL, single attention branch (Lu et al., Nat. Biomed. Eng. 2021).

Architecture of the official code (``CLAM_SB`` in models/model_clam.py of mahmoodlab/CLAM,
``gate=True``, ``size_arg='small'``, ``k_sample=8``, dropout 0.25 as its ``--drop_out``), with the
bag classifier's classes taken as the survival bins:

1. ``h = Dropout(ReLU(Linear(path_dim → 512)))`` per patch;
2. gated attention ``w^T (tanh(V h) ⊙ sigmoid(U h))`` (hidden 256, dropout 0.25 on both branches),
   softmax over the N patches, ``M = Σ a_i h_i`` (1×512);
3. ``Linear(512 → n_bins)`` on ``M``: the hazard logits (CLAM's bag classifier, one output per bin);
4. instance-level clustering: one ``Linear(512 → 2)`` instance classifier per bin; for the
   patient's bin ``y`` the ``k`` most attended patches are labelled 1 and the ``k`` least attended 0
   for classifier ``y``, cross-entropy over those ``2k`` patches (CLAM's ``inst_eval``; with
   ``subtyping=True`` the ``k`` most attended patches are also labelled 0 for every other bin's
   classifier and the sum is divided by the number of bins, CLAM's ``inst_eval_out``).

**Loss** (override of :meth:`SurvivalModel.loss`, it needs ``target.label``): CLAM's
``bag_weight`` mix, ``0.7 · NLL`` (term ``surv``) ``+ 0.3 · instance CE`` (term ``instance``);
``bag_weight`` is a hyper-parameter. With ``training.loss: cox`` the loop replaces the ``surv``
term by the window's Cox loss (unweighted) and keeps ``instance``.

**Survival adaptation followed.** The issue's: CLAM's instance branch unchanged with the
patient's discrete survival bin (the MCAT label, quartiles of uncensored survival) as its class,
``subtyping=False`` as CLAM's default (only the in-class branch), the bag classifier's ``n_bins``
outputs read as discrete hazards. (The one public survival wrapper of CLAM we could read,
``CLAM_PL_Surv`` of a ``pytorch_models`` package, uses the event indicator as the instance class
instead; we did not follow it, since the bin is what the survival literature's CLAM rows use and
what the issue names.) Censored patients take their bin as class too, as the NLL does.

**Bags smaller than 2k.** CLAM's ``torch.topk(A, k)`` fails when N < k. Here the number of patches
per side is ``k = min(k_sample, N // 2)``, so the top and bottom sets never overlap (an overlap would
ask the classifier for both labels on one patch). A bag of one patch (the zero-row bag of a patient
without features) has ``k = 0``: the instance term is 0 and only the bag loss trains. Demo bags
(~40–100 patches) use the full k = 8.

Parameters at the reference setting (1024-d, 4 bins): 793,869, equal to the official ``CLAM_SB``
with ``n_classes=4`` (tested). As the reference, the scorer's last bias is kept although it gets no
gradient (softmax ignores a constant shift): it is there for the count match only. PyTorch default
initialisation (the reference's ``CLAM_SB`` does not re-initialise).

Training defaults: CLAM's ``main.py`` argparse defaults, Adam, lr 1e-4, weight decay 1e-5, and its
default instance loss (``--inst_loss`` None → ``nn.CrossEntropyLoss``); epochs and accumulation
are the package's (CLAM trains up to 200 epochs, ``--early_stopping``: patience 20 on the
validation loss from epoch 50). The example commands of CLAM's README (docs/README.md) run
otherwise: ``--lr 2e-4 --inst_loss svm --bag_loss ce --weighted_sample --early_stopping``, where
``svm`` is the smooth top-1 SVM of the ``topk`` package (``SmoothTop1SVM(n_classes=2)``, Berrada
et al., ICLR 2018) on the 2k instance logits. We keep the code's defaults (CE, lr 1e-4);
``instance_loss="svm"`` (:func:`smooth_top1_svm`) with ``training.lr: 2e-4`` is the README's setting.
Class-balanced sampling (the loop's default) is the README's ``--weighted_sample``; ``main.py``'s
own default is off.

Departures: the bag classifier's outputs are hazard logits (NLL) instead of class logits (CE);
small bags as above; no hard-coded GPU placement; instance predictions are not returned (CLAM logs them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmsurv.models.base import SURVIVAL_TERM, Batch, ModelOutput, SurvivalModel, Target
from mmsurv.models.layers import GatedAttention
from mmsurv.models.registry import register_model

INSTANCE_TERM = "instance"
INSTANCE_LOSSES = ("ce", "svm")


def smooth_top1_svm(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0, tau: float = 1.0,
                    threshold: float = 1e3) -> torch.Tensor:
    """The smooth top-1 SVM loss (Berrada et al., ICLR 2018) averaged over rows: CLAM's ``--inst_loss svm``.

    Per row, with margins ``z_j = x_j + α·[j ≠ y] − x_y``: ``τ·log Σ_j exp(z_j / τ)``, or the hard
    ``max_j z_j`` when the top score leads the second by at least ``τ·log(threshold)`` (the
    ``SmoothTop1SVM`` of the ``topk`` package: n classes, α = 1, τ = 1, threshold 1e3)."""
    margins = logits + alpha * (torch.arange(logits.shape[1], device=logits.device) != targets[:, None])
    margins = margins - logits.gather(1, targets[:, None])
    top2 = logits.topk(2, dim=1).values
    hard = (top2[:, 0] - top2[:, 1] >= tau * math.log(threshold)).detach()
    smooth = tau * torch.logsumexp(margins / tau, dim=1)
    return torch.where(hard, margins.max(dim=1).values, smooth).mean()


@dataclass
class CLAMOutput(ModelOutput):
    """A CLAM forward: the standard output plus what the instance loss needs (with gradients)."""

    attention_raw: torch.Tensor | None = None  # branches × N attention scores (before softmax)
    features: torch.Tensor | None = None  # N × hidden patch embeddings


def instance_indices(scores: torch.Tensor, k_sample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``k`` most and ``k`` least attended rows, ``k = min(k_sample, N // 2)``."""
    k = min(k_sample, scores.numel() // 2)
    top = torch.topk(scores, k).indices
    bottom = torch.topk(-scores, k).indices
    return top, bottom


class CLAMBase(SurvivalModel):
    """Shared CLAM pieces: patch embedding, gated attention with ``branches`` outputs, instance loss."""

    inputs = ("path",)
    embedding_head = "classifier"
    defaults = {"training": {"lr": 1e-4, "weight_decay": 1e-5}}
    patch_score_kind = "gated attention weight (softmax over the bag; CLAM-MB: one row per survival bin)"
    patch_score_key = "path"
    branches_per_bin = False
    display = "CLAM"

    def __init__(self, *, path_dim: int = 1024, n_bins: int = 4, hidden_dim: int = 512, attention_dim: int = 256,
                 dropout: float = 0.25, k_sample: int = 8, bag_weight: float = 0.7, subtyping: bool = False,
                 instance_loss: str = "ce", **sizes):
        super().__init__(n_bins=n_bins, path_dim=path_dim, **sizes)
        if not 0.0 <= bag_weight <= 1.0:
            raise ValueError(f"{self.display}: bag_weight must lie in [0, 1], got {bag_weight}")
        if instance_loss not in INSTANCE_LOSSES:
            raise ValueError(f"{self.display}: instance_loss must be one of {', '.join(INSTANCE_LOSSES)}, got {instance_loss!r}")
        self.instance_loss_fn = F.cross_entropy if instance_loss == "ce" else smooth_top1_svm
        self.k_sample = k_sample
        self.bag_weight = bag_weight
        self.subtyping = subtyping
        self.fc = nn.Sequential(nn.Linear(path_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(hidden_dim, attention_dim, dropout, n_outputs=n_bins if self.branches_per_bin else 1)
        self.instance_classifiers = nn.ModuleList(nn.Linear(hidden_dim, 2) for _ in range(n_bins))
        self.classifier = nn.Linear(hidden_dim, n_bins)  # SB: the bag classifier; MB: row c is bin c's own
        self.classifier_in_features = hidden_dim

    def bag_logits(self, pooled: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch: Batch) -> CLAMOutput:
        h = self.fc(batch.one("path", self.display))
        raw = self.attention(h).transpose(0, 1)  # branches × N
        weights = torch.softmax(raw, dim=1)
        logits = self.bag_logits(weights @ h)  # 1 × n_bins
        return CLAMOutput(logits=logits, attention={"path": weights.detach()}, attention_raw=raw, features=h)

    def branch(self, raw: torch.Tensor, bin_index: int) -> torch.Tensor:
        """The attention scores the instance classifier of ``bin_index`` looks at."""
        return raw[bin_index] if self.branches_per_bin else raw[0]

    def instance_loss(self, raw: torch.Tensor, h: torch.Tensor, label: int) -> torch.Tensor:
        """CLAM's instance clustering loss of one patient whose survival bin is ``label``."""
        total = h.new_zeros(())
        for index, classifier in enumerate(self.instance_classifiers):
            scores = self.branch(raw, index)
            top, bottom = instance_indices(scores, self.k_sample)
            if top.numel() == 0:
                continue
            if index == label:  # in the class: top k → 1, bottom k → 0
                rows = torch.cat([top, bottom])
                targets = torch.cat([torch.ones_like(top), torch.zeros_like(bottom)])
            elif self.subtyping:  # out of the class: top k → 0
                rows, targets = top, torch.zeros_like(top)
            else:
                continue
            total = total + self.instance_loss_fn(classifier(h[rows]), targets)
        if self.subtyping:
            total = total / len(self.instance_classifiers)
        return total

    def loss(self, output: ModelOutput, target: Target) -> dict[str, torch.Tensor]:
        """``bag_weight · NLL`` as ``surv`` plus ``(1 − bag_weight) · instance CE`` as ``instance``."""
        nll = self.survival_loss(output, target)
        terms = {SURVIVAL_TERM: self.bag_weight * nll, **output.aux}
        if isinstance(output, CLAMOutput) and output.features is not None:
            instance = self.instance_loss(output.attention_raw, output.features, int(target.label.reshape(-1)[0]))
            terms[INSTANCE_TERM] = (1.0 - self.bag_weight) * instance
        return terms


@register_model("clam_sb", display="CLAM-SB", citation="Lu et al., Nat. Biomed. Eng. 2021")
class CLAMSB(CLAMBase):
    """CLAM with one attention branch and instance clustering on the survival bin (WSI only)."""

    display = "CLAM-SB"

    def bag_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled)
