"""Building blocks several models share (not a model module: the registry does not scan it)."""

from __future__ import annotations

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
