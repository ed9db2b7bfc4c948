"""The forward contract every survival model follows, whatever modalities it reads.

A model is an ``nn.Module`` subclass of :class:`SurvivalModel` with a class attribute ``modality``:

* ``"omic"``: reads ``batch.omic`` (all genomic columns, scaled) and/or ``batch.omic_groups``;
* ``"path"``: reads ``batch.path`` (an N×D bag of patch features of one patient);
* ``"multimodal"``: reads both.

The data loader gives a model only what its modality needs (``path`` is None for omic models, so
no feature file is ever opened for them). ``forward(batch)`` returns a :class:`ModelOutput` whose
``logits`` are 1×n_bins discrete-time hazard logits: ``hazards = sigmoid(logits)``,
``S = cumprod(1 − hazards)`` and the risk score is ``−ΣS`` (MCAT). ``aux_loss`` is an extra term the
training loop adds to the survival loss (None for the models here); ``attention`` carries attention
maps for inspection.

Batches hold ONE patient (MCAT trains with batch size 1 because bag sizes differ); gradient
accumulation gives the effective batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Batch:
    """One patient's inputs; fields a model's modality does not use may be None."""

    path: torch.Tensor | None = None  # N×D
    omic: torch.Tensor | None = None  # G
    omic_groups: list[torch.Tensor] | None = None  # one vector per group

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            path=None if self.path is None else self.path.to(device),
            omic=None if self.omic is None else self.omic.to(device),
            omic_groups=None if self.omic_groups is None else [group.to(device) for group in self.omic_groups],
        )


@dataclass
class ModelOutput:
    """What a model returns: hazard logits (1×n_bins), optional auxiliary loss and attention."""

    logits: torch.Tensor
    aux_loss: torch.Tensor | None = None
    attention: dict[str, torch.Tensor] | None = None

    @property
    def hazards(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def survival(self) -> torch.Tensor:
        return torch.cumprod(1 - self.hazards, dim=1)

    @property
    def risk(self) -> torch.Tensor:
        """MCAT's risk score −Σ_k S_k (one value per row)."""
        return -self.survival.sum(dim=1)


class SurvivalModel(nn.Module):
    """Base class: declares ``modality`` and the input sizes a model was built for."""

    modality: str = "omic"

    def __init__(self, *, n_bins: int = 4, path_dim: int = 0, omic_dim: int = 0,
                 group_sizes: list[int] | None = None):
        super().__init__()
        self.n_bins = n_bins
        self.path_dim = path_dim
        self.omic_dim = omic_dim
        self.group_sizes = list(group_sizes or [])

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def example_batch(self, bag_size: int = 1000, device: torch.device | str = "cpu") -> Batch:
        """A random batch of the shapes this model reads (FLOP counts, benchmarks, smoke tests)."""
        generator = torch.Generator().manual_seed(0)
        path = omic = groups = None
        if self.modality in ("path", "multimodal"):
            path = torch.randn(bag_size, self.path_dim, generator=generator)
        if self.modality in ("omic", "multimodal"):
            omic = torch.randn(self.omic_dim, generator=generator)
            groups = [torch.randn(size, generator=generator) for size in self.group_sizes]
        return Batch(path=path, omic=omic, omic_groups=groups).to(device)


def n_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def require(value, what: str, model: str):
    """``value`` or a clear error saying which input the model lacks."""
    if value is None:
        raise ValueError(f"{model}: the batch has no {what}")
    return value


class GatedAttention(nn.Module):
    """Gated attention scores (Ilse et al. 2018, eq. 9): w^T (tanh(V h) ⊙ sigmoid(U h)), one per row."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.tanh_branch = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Tanh(), nn.Dropout(dropout))
        self.sigmoid_branch = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(hidden_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """N×in_dim → N×1 unnormalised scores."""
        return self.score(self.tanh_branch(h) * self.sigmoid_branch(h))


def attention_pool(scores: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the N rows of ``scores`` (N×1) and the weighted sum of ``h`` (N×D) → (1×D, 1×N)."""
    weights = torch.softmax(scores.transpose(0, 1), dim=1)
    return weights @ h, weights
