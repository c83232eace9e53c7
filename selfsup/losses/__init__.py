"""Losses: plain ``nn.Module``s over tensors, arguments validated at construction."""

from selfsup.losses.infonce import InfoNCELoss

__all__ = ["InfoNCELoss"]
