"""selfsup: self-supervised pretraining of Vision Transformers on PyTorch Lightning."""

from selfsup.data import ImageDataModule
from selfsup.encoders import create_encoder
from selfsup.finetune import FineTune
from selfsup.methods import MAE, METHODS, PretrainModule, SimCLR

__version__ = "0.1.0"

__all__ = [
    "MAE",
    "METHODS",
    "FineTune",
    "ImageDataModule",
    "PretrainModule",
    "SimCLR",
    "__version__",
    "create_encoder",
]
