"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP") after
the attention and the MLP of each transformer block."""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """``x → up(gelu(down(x)))``; ``up`` starts at zero, so an adapter starts as the identity."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class Adapted(nn.Module):
    """``y = module(x, ...); y + adapter(y)``: an adapter on the output of a sub-layer, inside its
    residual branch."""

    def __init__(self, module: nn.Module, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.module = module
        self.adapter = Bottleneck(dim, bottleneck)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = self.module(x, *args, **kwargs)
        return y + self.adapter(y)


def add_adapters(blocks: nn.Module, dim: int, bottleneck: int) -> int:
    """Wrap ``attn`` and ``mlp`` of every block in ``blocks``; returns how many were wrapped."""
    count = 0
    for block in blocks:
        for name in ("attn", "mlp"):
            setattr(block, name, Adapted(getattr(block, name), dim, bottleneck))
            count += 1
    return count
