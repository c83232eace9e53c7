"""GPU augmentation on whole batches (Kornia), run in ``on_after_batch_transfer``."""

from selfsup.augment.crop_flip import CropFlipAugment, CropFlipConfig
from selfsup.augment.finetune import SegmentationAugment
from selfsup.augment.normalize import Normalize, to_unit_float
from selfsup.augment.simclr import SimCLRAugment, SimCLRViewConfig, simclr_view

__all__ = [
    "CropFlipAugment",
    "CropFlipConfig",
    "Normalize",
    "SegmentationAugment",
    "SimCLRAugment",
    "SimCLRViewConfig",
    "simclr_view",
    "to_unit_float",
]
