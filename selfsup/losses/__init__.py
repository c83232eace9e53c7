"""Losses: plain ``nn.Module``s over tensors, arguments validated at construction."""

from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.losses.dino import DINOLoss, teacher_temperature
from selfsup.losses.distillation import FeatureDistillationLoss
from selfsup.losses.gram import GramLoss
from selfsup.losses.ibot import IBOTPatchLoss
from selfsup.losses.infonce import InfoNCELoss
from selfsup.losses.koleo import KoLeoLoss
from selfsup.losses.masked_reconstruction import MaskedReconstructionLoss
from selfsup.losses.moco import MoCoV3Loss
from selfsup.losses.negative_cosine import NegativeCosineLoss
from selfsup.losses.sinkhorn import sinkhorn_knopp
from selfsup.losses.swav import SwAVLoss
from selfsup.losses.vicreg import VICRegLoss

__all__ = [
    "BarlowTwinsLoss",
    "DINOLoss",
    "FeatureDistillationLoss",
    "GramLoss",
    "IBOTPatchLoss",
    "InfoNCELoss",
    "KoLeoLoss",
    "MaskedReconstructionLoss",
    "MoCoV3Loss",
    "NegativeCosineLoss",
    "SwAVLoss",
    "VICRegLoss",
    "sinkhorn_knopp",
    "teacher_temperature",
]
