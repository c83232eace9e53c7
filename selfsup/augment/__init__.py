"""GPU augmentation on whole batches (Kornia), run in ``on_after_batch_transfer``."""

from selfsup.augment.finetune import ClassificationAugment, FineTuneViewConfig, SegmentationAugment
from selfsup.augment.mae import MAEAugment, MAEViewConfig
from selfsup.augment.normalize import Normalize, to_unit_float
from selfsup.augment.simclr import SimCLRAugment, SimCLRViewConfig, simclr_view

__all__ = [
    "ClassificationAugment",
    "FineTuneViewConfig",
    "SegmentationAugment",
    "MAEAugment",
    "MAEViewConfig",
    "Normalize",
    "SimCLRAugment",
    "SimCLRViewConfig",
    "simclr_view",
    "to_unit_float",
]
