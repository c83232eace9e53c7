"""Augmentation on whole batches, on the device, in ``on_after_batch_transfer``: every random
parameter drawn at once on the CPU, then a fixed number of batched ops per view."""

from selfsup.augment.batched import MultiViewAugment, apply_view
from selfsup.augment.crop_flip import CropFlipAugment, CropFlipConfig
from selfsup.augment.finetune import SegmentationAugment
from selfsup.augment.normalize import Normalize, to_unit_float
from selfsup.augment.params import ViewParams, sample_view_params
from selfsup.augment.simclr import SimCLRAugment, SimCLRViewConfig
from selfsup.augment.views import ViewConfig

__all__ = [
    "CropFlipAugment",
    "CropFlipConfig",
    "MultiViewAugment",
    "Normalize",
    "SegmentationAugment",
    "SimCLRAugment",
    "SimCLRViewConfig",
    "ViewConfig",
    "ViewParams",
    "apply_view",
    "sample_view_params",
    "to_unit_float",
]
