"""Heads on top of the encoder: projection MLP, MAE decoder, task heads."""

from selfsup.heads.classification import ClassificationHead
from selfsup.heads.mae_decoder import MAEDecoder, default_decoder
from selfsup.heads.projection import ProjectionHead
from selfsup.heads.segmentation import SegmentationHead

__all__ = ["ClassificationHead", "MAEDecoder", "ProjectionHead", "SegmentationHead", "default_decoder"]
