"""The fixed images a picture callback draws every N epochs (attention maps, MAE reconstructions)."""

from __future__ import annotations

import lightning as L
import torch


def fixed_images(trainer: L.Trainer, num_images: int, who: str) -> torch.Tensor:
    """The first ``num_images`` uint8 images of the held-out split (the training split where there
    is none, or the training loader without a data module), copied so they stay the same all run."""
    datamodule = trainer.datamodule
    loader = None
    if datamodule is not None and hasattr(datamodule, "eval_dataloader"):
        try:
            loader = datamodule.eval_dataloader("val", batch_size=num_images)
        except ValueError:
            loader = datamodule.eval_dataloader("train", batch_size=num_images)
    images, _ = next(iter(loader if loader is not None else trainer.train_dataloader))
    if isinstance(images, (list, tuple)):
        raise ValueError(
            f"{who} needs decoded uint8 image batches; with data.decode: gpu give it a data module with an "
            "eval_dataloader."
        )
    return images[:num_images].clone()
