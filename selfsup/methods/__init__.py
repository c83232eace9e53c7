"""Pretraining methods (LightningModules) and their registry.

``METHODS`` is the registry that the ``selfsup`` command and the docs read: the method's name, its
class (by import path, loaded on use) and one line on what it does. A new method is one file in this
folder plus one line here.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple


class MethodEntry(NamedTuple):
    class_path: str
    summary: str

    def load(self) -> type:
        module, name = self.class_path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)


METHODS: dict[str, MethodEntry] = {
    "simclr": MethodEntry(
        "selfsup.methods.simclr.SimCLR", "contrastive: InfoNCE between two views, global negatives"
    ),
    "mae": MethodEntry("selfsup.methods.mae.MAE", "masked autoencoder: reconstruct 75% hidden patches"),
    "dino": MethodEntry(
        "selfsup.methods.dino.DINO", "self-distillation with a momentum teacher and multi-crop"
    ),
    "mocov3": MethodEntry(
        "selfsup.methods.mocov3.MoCoV3", "contrastive with a momentum encoder and a predictor"
    ),
    "distill": MethodEntry(
        "selfsup.methods.distill.Distill", "distil a frozen teacher's features into a student"
    ),
}


def method_class(name: str) -> type:
    """The class registered as ``name``; a clear error lists the registered names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}.")
    return METHODS[name].load()


def __getattr__(name: str):
    # `from selfsup.methods import SimCLR` keeps working, loading only that method's module
    for entry in METHODS.values():
        if entry.class_path.rsplit(".", 1)[1] == name:
            return entry.load()
    if name == "PretrainModule":
        from selfsup.methods.base import PretrainModule

        return PretrainModule
    raise AttributeError(f"module 'selfsup.methods' has no attribute {name!r}")


__all__ = ["METHODS", "MethodEntry", "method_class"]
