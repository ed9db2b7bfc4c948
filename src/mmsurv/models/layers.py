"""Building blocks several models share (not a model module: the registry does not scan it)."""

from __future__ import annotations

import math

import torch
from torch import nn


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
                      dropout: float = 0.1) -> nn.Module:
    """``nystrom_attention.NystromAttention`` as TransMIL, CMTA, HDMoE and MoME build it: ``dim // heads``
    per head, ``dim // 2`` landmarks unless given, 6 Moore–Penrose iterations, value residual convolution.

    **Adaptive landmarks** (on by default; :func:`use_adaptive_landmarks` switches it per model). The
    package pads a sequence at the front with zero tokens to a multiple of its landmarks, unmasked, and
    always inverts a heads × landmarks × landmarks kernel. For a sequence shorter than the landmarks —
    a 7-token genomic sequence, a demo bag of ~40 patches — that pads 7 tokens to 128 or 256, lets the
    zero rows dilute the attention, and costs the same ~6 GFLOP of pseudo-inverse products per layer
    whatever the sequence (≈ 0.2–1 s per patient forward + backward on one CPU thread for CMTA, HDMoE
    and MoME at demo sizes). Adaptive, a layer uses ``min(landmarks, tokens)`` landmarks: a short
    sequence is its own landmark set (one token per landmark, no padding: full softmax attention up to the
    iterative pseudo-inverse's error, ~1e-2 after 6 iterations, ~1e-6 after 20; tested). Sequences of at least ``landmarks`` tokens are computed exactly as the package
    does. No parameter depends on it."""
    from nystrom_attention import (
        NystromAttention,  # imported when a model is built, not at discovery
    )

    attention = NystromAttention(dim=dim, dim_head=dim // heads, heads=heads, num_landmarks=landmarks or dim // 2,
                                 pinv_iterations=pinv_iterations, residual=True, dropout=dropout)
    attention.max_landmarks = attention.num_landmarks
    attention.adaptive_landmarks = True
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
