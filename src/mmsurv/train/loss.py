"""The loop's optional survival loss: the Cox partial likelihood of an accumulation window.

**Cox** (``training.loss: cox``): negative Breslow partial log-likelihood of log-risks θ over a set
of patients, ``−Σ_{i: event} [θ_i − log Σ_{j: t_j ≥ t_i} exp θ_j] / #events``. With batch size 1
it is computed over each gradient-accumulation window (see :mod:`mmsurv.train.loop`), replacing
the model's ``surv`` term. The default loss, MCAT's NLL, is the model's own
(:mod:`mmsurv.models.survival`).
"""

from __future__ import annotations

import torch


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
