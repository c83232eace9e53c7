"""Pretraining methods (LightningModules) and their registry."""

from selfsup.methods.base import PretrainModule
from selfsup.methods.mae import MAE
from selfsup.methods.simclr import SimCLR

METHODS: dict[str, type[PretrainModule]] = {
    "simclr": SimCLR,
    "mae": MAE,
}

__all__ = ["MAE", "METHODS", "PretrainModule", "SimCLR"]
