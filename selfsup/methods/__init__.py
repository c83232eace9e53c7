"""Pretraining methods (LightningModules) and their registry."""

from selfsup.methods.base import PretrainModule
from selfsup.methods.simclr import SimCLR

METHODS: dict[str, type[PretrainModule]] = {
    "simclr": SimCLR,
}

__all__ = ["METHODS", "PretrainModule", "SimCLR"]
