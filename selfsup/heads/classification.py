"""Image classification head on pooled features."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """``[B, in_dim]`` → ``[B, num_classes]`` logits: one linear layer (``linear``), or a hidden
    layer with GELU (``mlp``). The linear head starts near zero (truncated normal, std 2e-5, as in MAE
    fine-tuning), so the initial logits are close to uniform."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        kind: Literal["linear", "mlp"] = "linear",
        hidden_dim: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if kind not in ("linear", "mlp"):
            raise ValueError(f"head kind must be 'linear' or 'mlp', got {kind!r}.")
        self.kind = kind
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if kind == "linear":
            self.layers = nn.Linear(in_dim, num_classes)
            nn.init.trunc_normal_(self.layers.weight, std=2e-5)
            nn.init.zeros_(self.layers.bias)
        else:
            self.layers = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_classes)
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(self.dropout(features))
