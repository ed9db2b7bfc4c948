"""Discrete-time survival on the model side: survival curves, MCAT's risk and its NLL loss.

For every model (the contract's default loss) and for the loop's evaluation. With ``K`` hazard
logits per patient, ``h_k = sigmoid(logit_k)`` and ``S_k = Π_{j≤k} (1 − h_j)``, ``1 − h``
computed as ``sigmoid(−logit)`` (exact near 1).

**NLL** (Zadeh & Schmid 2021; ``nll_loss`` in utils/utils.py of mahmoodlab/MCAT). With padded
``S_pad = [1, S_1 … S_K]`` (so ``S_pad[y] = S(y − 1)``), bin ``y`` and censorship ``c`` (1 = censored)::

    uncensored = −(1 − c) · [log max(S_pad[y], ε) + log max(h[y], ε)]
    censored   = −c · log max(S_pad[y + 1], ε)
    loss       = (1 − α) · (censored + uncensored) + α · uncensored       (mean over the batch)

with ``ε = 1e-7``. MCAT's ``main.py`` trains with ``--alpha_surv 0.0`` (the experiment names read
``nll_surv_a0.0``) and validates with α = 0; ``NLLSurvLoss``'s own default there is 0.15. Our
default α is 0.0, as in the published runs; ``training.alpha`` changes it (the loop passes it with
the labels, :class:`mmsurv.models.base.Target`). :func:`nll_logits_loss` is the same loss from
the logits, the form a model's ``loss`` calls.
"""

from __future__ import annotations

import torch

NLL_EPS = 1e-7


def discrete_survival(logits: torch.Tensor) -> torch.Tensor:
    """B×K hazard logits → B×K survival S_k = Π_{j≤k} sigmoid(−logit_j)."""
    return torch.cumprod(torch.sigmoid(-logits), dim=1)


def mcat_risk(survival: torch.Tensor) -> torch.Tensor:
    """MCAT's risk score −Σ_k S_k per row (higher = earlier event)."""
    return -survival.sum(dim=1)


def nll_surv_loss(hazards: torch.Tensor, survival: torch.Tensor, label: torch.Tensor, censorship: torch.Tensor,
                  alpha: float = 0.0, eps: float = NLL_EPS, reduction: str = "mean") -> torch.Tensor:
    """MCAT's discrete-time survival NLL; ``hazards``/``survival`` B×K, ``label``/``censorship`` B."""
    label = label.reshape(-1, 1).long()
    censorship = censorship.reshape(-1, 1).to(hazards.dtype)
    padded = torch.cat([torch.ones_like(censorship), survival], dim=1)
    s_before = torch.gather(padded, 1, label).clamp(min=eps)
    s_after = torch.gather(padded, 1, label + 1).clamp(min=eps)
    h_at = torch.gather(hazards, 1, label).clamp(min=eps)
    uncensored = -(1 - censorship) * (torch.log(s_before) + torch.log(h_at))
    censored = -censorship * torch.log(s_after)
    loss = (1 - alpha) * (censored + uncensored) + alpha * uncensored
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss.reshape(-1)
    raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")


def nll_logits_loss(logits: torch.Tensor, label: torch.Tensor, censorship: torch.Tensor, alpha: float = 0.0,
                    eps: float = NLL_EPS, reduction: str = "mean") -> torch.Tensor:
    """:func:`nll_surv_loss` of B×K hazard logits (the same numbers as from their hazards and curve)."""
    return nll_surv_loss(torch.sigmoid(logits), discrete_survival(logits), label, censorship, alpha, eps, reduction)
