"""Heads on top of the encoder: projection MLP, MAE decoder, task heads."""

from selfsup.heads.mae_decoder import MAEDecoder, default_decoder
from selfsup.heads.projection import ProjectionHead

__all__ = ["MAEDecoder", "ProjectionHead", "default_decoder"]
