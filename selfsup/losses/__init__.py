"""Losses: plain ``nn.Module``s over tensors, arguments validated at construction."""

from selfsup.losses.infonce import InfoNCELoss
from selfsup.losses.masked_reconstruction import MaskedReconstructionLoss

__all__ = ["InfoNCELoss", "MaskedReconstructionLoss"]
