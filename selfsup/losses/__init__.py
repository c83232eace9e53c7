"""Losses: plain ``nn.Module``s over tensors, arguments validated at construction."""

from selfsup.losses.dino import DINOLoss, teacher_temperature
from selfsup.losses.distillation import FeatureDistillationLoss
from selfsup.losses.infonce import InfoNCELoss
from selfsup.losses.masked_reconstruction import MaskedReconstructionLoss
from selfsup.losses.moco import MoCoV3Loss

__all__ = [
    "DINOLoss",
    "FeatureDistillationLoss",
    "InfoNCELoss",
    "MaskedReconstructionLoss",
    "MoCoV3Loss",
    "teacher_temperature",
]
