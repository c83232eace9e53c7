"""The ``AttentionMaps`` callback: the attention maps of fixed held-out images during training."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from selfsup.eval.attention_figure import attention_figure
from selfsup.eval.class_attention import class_token_attention
from selfsup.eval.image_grid import ImageGrid, Picture


class AttentionMaps(ImageGrid):
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
        super().__init__(every_n_epochs, num_images)
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1] (DINO shows 0.6) or be None, got {threshold!r}.")
        self.threshold = threshold
        self.panel_size = panel_size

    @staticmethod
    def _encoder(pl_module: L.LightningModule):
        encoder = getattr(pl_module, "backbone", None)
        return getattr(pl_module, "encoder", None) if encoder is None else encoder

    def applies(self, pl_module: L.LightningModule) -> str | None:
        if not hasattr(self._encoder(pl_module), "blocks"):
            return "needs a method with a ViT encoder"
        return None

    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule, images: torch.Tensor) -> Any:
        return class_token_attention(
            self._encoder(pl_module), pl_module.normalize(images.to(pl_module.device))
        )

    def render(self, computed: Any, images: torch.Tensor, epoch: int) -> list[Picture]:
        return [
            Picture(
                f"attention/epoch_{epoch:03d}/{index}.png",
                f"attention/{index}",
                attention_figure(image, maps, self.threshold, self.panel_size),
            )
            for index, (image, maps) in enumerate(zip(images, computed.cpu(), strict=True))
        ]
