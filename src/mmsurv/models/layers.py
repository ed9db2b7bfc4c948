"""Building blocks several models share (not a model module: the registry does not scan it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmsurv.models.base import ModelOutput, Target

LOGIT_CLAMP = 1e-7


class PyramidPositionEncoding(nn.Module):
    """TransMIL's PPEG: the identity plus depth-wise 7×7, 5×5 and 3×3 convolutions over the square
    token grid; the class token (first) passes through unchanged."""

    def __init__(self, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        """``x``: B×(1 + side²)×dim, class token first."""
        cls, grid = x[:, :1], x[:, 1:].transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


def nystrom_attention(dim: int, heads: int = 8, landmarks: int | None = None, pinv_iterations: int = 6,
                      dropout: float = 0.1, adaptive: bool = False) -> nn.Module:
    """``nystrom_attention.NystromAttention`` as TransMIL, CMTA, HDMoE and MoME build it: ``dim // heads``
    per head, ``dim // 2`` landmarks unless given, 6 Moore–Penrose iterations, value residual convolution.
    By default (``adaptive=False``) it computes exactly what the package (the references' own layer) does.

    **Adaptive landmarks** (our improvement, an option, OFF by default: ``adaptive=True`` here, or
    :func:`use_adaptive_landmarks` / a model's ``adaptive_landmarks=True``). The package pads a
    sequence at the front with zero tokens to a multiple of its landmarks, unmasked, and always
    inverts a heads × landmarks × landmarks kernel. For a sequence shorter than the landmarks — a
    7-token genomic sequence, a demo bag of ~24 patches — that pads it to 128 or 256 tokens, lets the
    zero rows dilute the attention, and costs the same ~6 GFLOP of pseudo-inverse products per layer
    whatever the sequence (one CPU thread, forward + backward at 24 patches, off → on: CMTA 384 → 63
    ms, HDMoE 178 → 32, MoME 1,389 → 50, TransMIL 543 → 14; ``bench/step_cost.py``). Adaptive, a
    layer uses ``min(landmarks, tokens)`` landmarks: a short sequence is its own landmark set (one
    token per landmark, no padding: full softmax attention up to the iterative pseudo-inverse's
    error, ~1e-2 after 6 iterations, ~1e-6 after 20; tested). It changes the output of every short
    sequence. Sequences of at least ``landmarks`` tokens are computed exactly as the package
    does. No parameter depends on it."""
    from nystrom_attention import (
        NystromAttention,  # imported when a model is built, not at discovery
    )

    attention = NystromAttention(dim=dim, dim_head=dim // heads, heads=heads, num_landmarks=landmarks or dim // 2,
                                 pinv_iterations=pinv_iterations, residual=True, dropout=dropout)
    attention.max_landmarks = attention.num_landmarks
    attention.adaptive_landmarks = adaptive
    attention.register_forward_pre_hook(_fit_landmarks)
    return attention


def _fit_landmarks(module: nn.Module, args: tuple) -> None:
    # NystromAttention reads num_landmarks at call time; args[0] is the B×N×dim input.
    tokens = args[0].shape[1]
    module.num_landmarks = min(module.max_landmarks, tokens) if module.adaptive_landmarks else module.max_landmarks


def use_adaptive_landmarks(model: nn.Module, adaptive: bool) -> None:
    """Switch adaptive landmarks on or off in every :func:`nystrom_attention` layer of ``model``."""
    for module in model.modules():
        if hasattr(module, "max_landmarks"):
            module.adaptive_landmarks = adaptive


class NystromBlock(nn.Module):
    """``x + NystromAttention(LayerNorm(x))``: TransMIL's ``TransLayer`` (no feed-forward), as CMTA and HDMoE reuse it."""

    def __init__(self, dim: int, heads: int = 8, landmarks: int | None = None, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nystrom_attention(dim, heads=heads, landmarks=landmarks, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


class ClassTokenEncoder(nn.Module):
    """CMTA's and HDMoE's token encoder: class token + Nyström block (+ PPEG over the square-padded token
    grid, for a patch bag) + Nyström block + LayerNorm → (class token, token outputs)."""

    def __init__(self, dim: int, positional: bool):
        super().__init__()
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.normal_(self.cls_token, std=1e-6)
        self.layer1 = NystromBlock(dim)
        self.positional = PyramidPositionEncoding(dim) if positional else None
        self.layer2 = NystromBlock(dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens``: B×N×dim → class token B×dim and the token outputs."""
        side = 0
        if self.positional is not None:  # pad to a square by repeating the first rows (TransMIL)
            side = math.ceil(math.sqrt(tokens.shape[1]))
            tokens = torch.cat([tokens, tokens[:, :side * side - tokens.shape[1]]], dim=1)
        h = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        h = self.layer1(h)
        if self.positional is not None:
            h = self.positional(h, side)
        h = self.norm(self.layer2(h))
        return h[:, 0], h[:, 1:]


def xavier_init(module: nn.Module) -> None:
    """CMTA's ``initialize_weights`` (HDMoE's network.py applies the same function): Xavier-normal
    Linear weights, zero biases; LayerNorm weight 1, bias 0. (MoME's code never calls its copy of
    it, utils/utils.py, for the MoME model: MoME keeps PyTorch's default initialisation.)"""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.LayerNorm):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


# Micro-batches: the training and validation loops of MOTCat's trainer/mb_trainer.py, which MoME's
# and MMM's releases reuse (``split_chunk_list``): a bag is shuffled and split into
# ``N // size + 1`` near-equal chunks, the whole model runs on each chunk with the same genomic input,
# the loss is the mean of the chunks' losses and the risk the mean of the chunks' −Σ_k S_k.

def micro_batches(n: int, size: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> list[torch.Tensor]:
    """Row indices of a shuffle of ``n`` rows split into ``n // size + 1`` near-equal chunks, the larger
    ones first (``np.array_split`` of the references' ``split_chunk_list``); empty chunks are dropped.

    The shuffle draws from ``generator``, or from torch's global generator (seeded by the run) when None."""
    if size < 1:
        raise ValueError(f"micro-batch size must be at least 1, got {size}")
    order = torch.randperm(n, generator=generator) if generator is not None else torch.randperm(n)
    return [chunk.to(device) for chunk in torch.tensor_split(order, n // size + 1) if chunk.numel()]


def chunk_generator(training: bool, eval_seed: int) -> torch.Generator | None:
    """None in training (the global generator); in evaluation a generator seeded with ``eval_seed``, so a
    model gives the same risk for the same bag (the references reshuffle at every validation)."""
    return None if training else torch.Generator().manual_seed(eval_seed)


def run_micro_batches(chunk_forward: Callable[..., Any], path: torch.Tensor, size: int | None,
                      generator: torch.Generator | None, *args: Any, recompute: bool = False,
                      ) -> tuple[list[torch.Tensor], list[Any]]:
    """``chunk_forward(rows of path, *args)`` on every micro-batch: (the chunks' row indices, their results).
    ``size=None``: one chunk, the whole bag in its order (no shuffle).

    ``recompute`` (with more than one chunk, gradients on) checkpoints each chunk: recomputed in the
    backward pass with the same random state, so the gradients are the same and memory holds one chunk."""
    if size is None:
        return [torch.arange(path.shape[0], device=path.device)], [chunk_forward(path, *args)]
    chunks = micro_batches(path.shape[0], size, generator, path.device)
    recompute = recompute and len(chunks) > 1 and torch.is_grad_enabled()
    results = []
    for rows in chunks:
        part = path.index_select(0, rows)
        results.append(checkpoint(chunk_forward, part, *args, use_reentrant=False) if recompute
                       else chunk_forward(part, *args))
    return chunks, results


def mean_chunk_risk(chunk_logits: torch.Tensor) -> torch.Tensor:
    """The mean over the C chunks (C×K logits) of MCAT's risk −Σ_k S_k, shape (1,)."""
    return -torch.cumprod(torch.sigmoid(-chunk_logits), dim=1).sum(dim=1).mean().reshape(1)


def mean_curve_logits(chunk_logits: torch.Tensor) -> torch.Tensor:
    """1×K hazard logits whose survival curve is the mean of the C chunks' curves (C×K)."""
    if chunk_logits.shape[0] == 1:
        return chunk_logits
    survival = torch.cumprod(torch.sigmoid(-chunk_logits), dim=1).mean(dim=0, keepdim=True)
    before = torch.cat([survival.new_ones(1, 1), survival[:, :-1]], dim=1)
    hazard = (1 - survival / before.clamp_min(LOGIT_CLAMP)).clamp(LOGIT_CLAMP, 1 - LOGIT_CLAMP)
    return torch.logit(hazard)


@dataclass
class MicroBatchOutput(ModelOutput):
    """A :class:`ModelOutput` that also carries each micro-batch's logits (C×K) for the loss."""

    chunk_logits: torch.Tensor | None = None


def micro_batch_output(chunk_logits: torch.Tensor, **fields: Any) -> MicroBatchOutput:
    """The output of C chunks' logits (C×K): mean survival curve, mean risk, the chunks for the loss."""
    return MicroBatchOutput(logits=mean_curve_logits(chunk_logits), risk_score=mean_chunk_risk(chunk_logits),
                            chunk_logits=chunk_logits, **fields)


def micro_batch_loss(base_loss: Callable[[ModelOutput, Target], dict[str, torch.Tensor]], output: ModelOutput,
                     target: Target) -> dict[str, torch.Tensor]:
    """A model's loss over micro-batches: ``base_loss`` (its base class's, MCAT's NLL) on the chunks of a
    :class:`MicroBatchOutput` — the mean over chunks, the references' ``loss / cnt`` — plus ``output.aux``;
    on any other output, ``base_loss`` itself. A model's ``loss`` returns
    ``micro_batch_loss(super().loss, output, target)``."""
    chunk_logits = getattr(output, "chunk_logits", None)
    if chunk_logits is None:
        return base_loss(output, target)
    count = chunk_logits.shape[0]
    chunks = ModelOutput(logits=chunk_logits, aux=output.aux)
    return base_loss(chunks, Target(target.label.expand(count), target.censorship.expand(count),
                                    target.time.expand(count)))
