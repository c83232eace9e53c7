"""Heads on top of the encoder: projection MLP, MAE decoder, task heads."""

from selfsup.heads.projection import ProjectionHead

__all__ = ["ProjectionHead"]
