"""The ``AttentionMaps`` callback: the attention maps of fixed held-out images during training."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image

from selfsup.eval.attention_figure import attention_figure
from selfsup.eval.class_attention import class_token_attention
from selfsup.eval.fixed_images import fixed_images


class AttentionMaps(Callback):
    """Every ``every_n_epochs`` (and after the last epoch), write the attention maps of a fixed set
    of held-out images as ``<log dir>/attention/epoch_<NNN>/<i>.png`` and send them to the active
    loggers (TensorBoard ``add_image``, W&B ``log_image``). Same images every time, so the PNGs show
    training progress.

    The encoder is the method's ``backbone`` (the teacher for DINO and MoCo v3) or its ``encoder``,
    and ``pl_module.normalize`` normalises the images: any selfsup method with a ViT encoder.

    Distributed runs: every process runs the forward (under FSDP a forward on one process alone
    would wait forever for the others; the attention row is computed inside the last block's
    forward, where its parameters are gathered); only the first process renders and writes.

    Args:
        every_n_epochs: how often.
        num_images: how many held-out images (the first of the validation split, else of the
            training split).
        threshold: see :func:`attention_figure` (None: the attention maps themselves).
        panel_size: see :func:`attention_figure`.
    """

    def __init__(
        self,
        every_n_epochs: int = 10,
        num_images: int = 4,
        threshold: float | None = None,
        panel_size: int | None = None,
    ) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError(
                f"every_n_epochs and num_images must be >= 1, got {every_n_epochs} and {num_images}."
            )
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1] (DINO shows 0.6) or be None, got {threshold!r}.")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.threshold = threshold
        self.panel_size = panel_size
        self.images: torch.Tensor | None = None
        self.paths: list[Path] = []

    def _fixed_images(self, trainer: L.Trainer) -> torch.Tensor:
        if self.images is None:
            self.images = fixed_images(trainer, self.num_images, "AttentionMaps")
        return self.images

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        encoder = getattr(pl_module, "backbone", None)
        if encoder is None:
            encoder = getattr(pl_module, "encoder", None)
        if encoder is None or not hasattr(encoder, "blocks"):
            rank_zero_warn("AttentionMaps needs a method with a ViT encoder; skipping it for this model.")
            return
        images = self._fixed_images(trainer)
        attention = class_token_attention(encoder, pl_module.normalize(images.to(pl_module.device)))
        # trainer.log_dir broadcasts from rank 0: every process must ask for it
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "attention" / f"epoch_{epoch:03d}"
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for index, (image, maps) in enumerate(zip(images, attention.cpu(), strict=True)):
            rgba = attention_figure(image, maps, self.threshold, self.panel_size)
            path = folder / f"{index}.png"
            Image.fromarray(rgba).save(path)
            self.paths.append(path)
            rgb = rgba[..., :3]
            for logger in trainer.loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_image"):  # TensorBoard
                    experiment.add_image(
                        f"attention/{index}", rgb, global_step=trainer.global_step, dataformats="HWC"
                    )
                elif hasattr(logger, "log_image"):  # Weights & Biases
                    logger.log_image(key=f"attention/{index}", images=[rgb], step=trainer.global_step)
