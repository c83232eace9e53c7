"""selfsup: self-supervised pretraining of Vision Transformers on PyTorch Lightning.

The names below load on first use, so ``import selfsup.losses`` (or any light submodule) does not
pull in Lightning, Kornia, matplotlib or torchmetrics. So do the methods: ``selfsup.<ClassName>``
is any method the registry discovers (``selfsup.methods``: a file in ``selfsup/methods/`` or a
package's ``selfsup.methods`` entry point), so ``model.class_path: selfsup.<ClassName>`` works in a
config with nothing else edited.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "ImageDataModule": "selfsup.data.datamodule",
    "ImageTextDataModule": "selfsup.data.image_text",
    "create_encoder": "selfsup.encoders.vit",
    "FineTune": "selfsup.finetune.module",
    "PretrainModule": "selfsup.methods.base",
    "METHODS": "selfsup.methods",
    "load_encoder": "selfsup.load",
    "export": "selfsup.exporting",
    "load_checkpoint": "selfsup.contract",
    "CheckpointError": "selfsup.contract",
}

# `__all__` lists the built-in methods for `from selfsup import *`; every discovered method resolves
__all__ = [*_EXPORTS, "SimCLR", "MAE", "DINO", "MoCoV3", "Distill", "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name.startswith("_"):  # dunder probes (__path__, __file__...) never trigger discovery
        raise AttributeError(f"module 'selfsup' has no attribute {name!r}")
    else:
        from selfsup.methods import find_class

        entry = find_class(name)
        if entry is None:
            raise AttributeError(f"module 'selfsup' has no attribute {name!r}")
        value = entry.load()
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    from selfsup.methods import registry

    return sorted(set(globals()) | set(__all__) | {e.class_name for e in registry().values()})


if TYPE_CHECKING:  # static analysers and IDEs see the real names (a new method need not be added here)
    from selfsup.contract import CheckpointError, load_checkpoint
    from selfsup.data.datamodule import ImageDataModule
    from selfsup.data.image_text import ImageTextDataModule
    from selfsup.encoders.vit import create_encoder
    from selfsup.exporting import export
    from selfsup.finetune.module import FineTune
    from selfsup.load import load_encoder
    from selfsup.methods import METHODS
    from selfsup.methods.base import PretrainModule
    from selfsup.methods.dino import DINO
    from selfsup.methods.distill import Distill
    from selfsup.methods.mae import MAE
    from selfsup.methods.mocov3 import MoCoV3
    from selfsup.methods.simclr import SimCLR
