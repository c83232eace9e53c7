"""Heads on top of the encoder: projection MLPs, the MAE decoder, DINO's head, I-JEPA's predictor,
task heads."""

from selfsup.heads.classification import ClassificationHead
from selfsup.heads.dino import DINOHead
from selfsup.heads.jepa_predictor import JEPAPredictor
from selfsup.heads.mae_decoder import MAEDecoder, default_decoder
from selfsup.heads.moco import build_mlp, moco_predictor, moco_projector
from selfsup.heads.projection import ProjectionHead
from selfsup.heads.segmentation import SegmentationHead
from selfsup.heads.swav import SwAVPrototypes

__all__ = [
    "ClassificationHead",
    "DINOHead",
    "JEPAPredictor",
    "MAEDecoder",
    "ProjectionHead",
    "SegmentationHead",
    "SwAVPrototypes",
    "build_mlp",
    "default_decoder",
    "moco_predictor",
    "moco_projector",
]
