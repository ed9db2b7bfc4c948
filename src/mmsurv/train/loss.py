"""Survival losses: MCAT's discrete-time NLL (with α weighting) and the Cox partial likelihood.

**NLL** (Zadeh & Schmid 2021; ``nll_loss`` in utils/utils.py of mahmoodlab/MCAT). With hazards
``h_k = sigmoid(logit_k)``, survival ``S_k = Π_{j≤k}(1 − h_j)``, padded ``S_pad = [1, S_1 … S_K]``
(so ``S_pad[y] = S(y − 1)``), bin ``y`` and censorship ``c`` (1 = censored)::

    uncensored = −(1 − c) · [log max(S_pad[y], ε) + log max(h[y], ε)]
    censored   = −c · log max(S_pad[y + 1], ε)
    loss       = (1 − α) · (censored + uncensored) + α · uncensored       (mean over the batch)

with ``ε = 1e-7``. MCAT's ``main.py`` trains with ``--alpha_surv 0.0`` (the experiment names read
``nll_surv_a0.0``) and validates with α = 0; ``NLLSurvLoss``'s own default is 0.15. Our default
α is 0.0, as in the published runs; ``training.alpha`` changes it.

**Cox** (optional): negative Breslow partial log-likelihood of log-risks θ over a set of patients,
``−Σ_{i: event} [θ_i − log Σ_{j: t_j ≥ t_i} exp θ_j] / #events``. With batch size 1 it is computed
over each gradient-accumulation window (see :mod:`mmsurv.train.loop`).
"""

from __future__ import annotations

import torch
from torch import nn

NLL_EPS = 1e-7


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


class NLLSurvLoss(nn.Module):
    """Module form of :func:`nll_surv_loss` (α default 0.0 as MCAT's published runs)."""

    def __init__(self, alpha: float = 0.0, eps: float = NLL_EPS, reduction: str = "mean"):
        super().__init__()
        self.alpha, self.eps, self.reduction = alpha, eps, reduction

    def forward(self, hazards: torch.Tensor, survival: torch.Tensor, label: torch.Tensor,
                censorship: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        return nll_surv_loss(hazards, survival, label, censorship, self.alpha if alpha is None else alpha,
                             self.eps, self.reduction)


def cox_ph_loss(log_risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Breslow partial log-likelihood, mean over events (0 when there is no event)."""
    log_risk = log_risk.reshape(-1)
    time = time.reshape(-1).to(log_risk.dtype)
    event = event.reshape(-1).to(log_risk.dtype)
    if float(event.sum()) == 0:
        return log_risk.sum() * 0.0
    at_risk = (time.unsqueeze(0) >= time.unsqueeze(1)).to(log_risk.dtype)  # row i: j with t_j >= t_i
    log_denominator = torch.logsumexp(log_risk.unsqueeze(0) + torch.log(at_risk), dim=1)
    return -((log_risk - log_denominator) * event).sum() / event.sum()
