"""Low-rank adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on
``nn.Linear`` layers, mergeable into plain weights."""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * B(A(dropout(x)))`` with ``base`` frozen; ``B`` starts at zero, so
    the wrapped layer starts equal to the original.

    Shapes: ``A`` is ``[rank, in_features]``, ``B`` is ``[out_features, rank]``.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}.")
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        for p in self.base.parameters():
            p.requires_grad_(False)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + scale * B @ A`` (same outputs, no adapter)."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.base.bias is not None,
            device=self.base.weight.device,
            dtype=self.base.weight.dtype,
        )
        linear.weight.copy_(
            self.base.weight + self.scale * (self.lora_B @ self.lora_A).to(self.base.weight.dtype)
        )
        if self.base.bias is not None:
            linear.bias.copy_(self.base.bias)
        return linear


def add_lora(
    model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float, dropout: float = 0.0
) -> int:
    """Wrap every ``nn.Linear`` whose attribute name is in ``targets`` (e.g. ``qkv``, ``proj`` of
    timm's attention); returns how many were wrapped."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, alpha, dropout))
                count += 1
    return count


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` in ``model`` by its merged ``nn.Linear`` (in place)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return model
