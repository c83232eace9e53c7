"""Heads on top of the encoder: projection MLPs, the MAE decoder, DINO's head, task heads."""

from selfsup.heads.classification import ClassificationHead
from selfsup.heads.dino import DINOHead
from selfsup.heads.mae_decoder import MAEDecoder, default_decoder
from selfsup.heads.moco import build_mlp, moco_predictor, moco_projector
from selfsup.heads.projection import ProjectionHead
from selfsup.heads.segmentation import SegmentationHead

__all__ = [
    "ClassificationHead",
    "DINOHead",
    "MAEDecoder",
    "ProjectionHead",
    "SegmentationHead",
    "build_mlp",
    "default_decoder",
    "moco_predictor",
    "moco_projector",
]
