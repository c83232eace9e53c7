"""``ImageGrid``: the base of every picture callback (attention maps, MAE reconstructions).

A picture callback draws the same held-out images every ``every_n_epochs`` (and after the last
epoch), writes PNGs under the run's log folder and sends them to the active loggers (TensorBoard
``add_image``, W&B ``log_image``). The base holds all of that; a subclass says what applies
(:meth:`ImageGrid.applies`), what every process computes (:meth:`ImageGrid.compute`: the model's
forward, which under FSDP must run on every process, since each holds a shard of the weights) and
what the first process draws from it (:meth:`ImageGrid.render`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image

from selfsup.eval.fixed_images import fixed_images


@dataclass
class Picture:
    """One PNG: its path under the run's log folder, the logger tag, and the ``[H, W, 3|4]`` uint8 pixels."""

    path: str
    tag: str
    pixels: np.ndarray


def to_pixels(grid: torch.Tensor) -> np.ndarray:
    """A float ``[3, H, W]`` image in [0, 1] as ``[H, W, 3]`` uint8 (rounded as torchvision's ``save_image``)."""
    return grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class ImageGrid(Callback):
    """Draw pictures of ``num_images`` fixed held-out images every ``every_n_epochs`` (see the
    module docstring). Subclasses implement :meth:`applies`, :meth:`compute` and :meth:`render`.

    Attributes:
        images: the fixed uint8 images (the first of the validation split, else of the training split).
        paths: every PNG written so far.
    """

    what = "pictures"

    def __init__(self, every_n_epochs: int, num_images: int) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError(
                f"every_n_epochs and num_images must be >= 1, got {every_n_epochs} and {num_images}."
            )
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.images: torch.Tensor | None = None
        self.paths: list[Path] = []

    def applies(self, pl_module: L.LightningModule) -> str | None:
        """None when the callback can draw ``pl_module``; else why not (it then warns and skips)."""
        return None

    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule, images: torch.Tensor) -> Any:
        """What every process computes (the forward); handed to :meth:`render` on the first process."""
        raise NotImplementedError

    def render(self, computed: Any, images: torch.Tensor, epoch: int) -> list[Picture]:
        """The pictures of one epoch, drawn on the first process only."""
        raise NotImplementedError

    def due(self, trainer: L.Trainer) -> bool:
        """Every ``every_n_epochs`` epochs, and after the last one."""
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return (epoch + 1) % self.every_n_epochs == 0 or last

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.due(trainer):
            return
        problem = self.applies(pl_module)
        if problem is not None:
            rank_zero_warn(f"{type(self).__name__} {problem}; skipping it for this model.")
            return
        if self.images is None:
            self.images = fixed_images(trainer, self.num_images, type(self).__name__)
        computed = self.compute(trainer, pl_module, self.images)
        # trainer.log_dir broadcasts from the first process: every process must ask for it
        root = Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        for picture in self.render(computed, self.images, trainer.current_epoch):
            path = root / picture.path
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture.pixels).save(path)
            self.paths.append(path)
            log_picture(trainer, picture)


def log_picture(trainer: L.Trainer, picture: Picture) -> None:
    """Send a picture to the loggers that take images (TensorBoard, Weights & Biases)."""
    rgb = picture.pixels[..., :3]
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):  # TensorBoard
            experiment.add_image(picture.tag, rgb, global_step=trainer.global_step, dataformats="HWC")
        elif hasattr(logger, "log_image"):  # Weights & Biases
            logger.log_image(key=picture.tag, images=[rgb], step=trainer.global_step)
