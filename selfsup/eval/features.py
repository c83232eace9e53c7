"""Frozen-feature extraction: encoder in eval mode, no gradients, one pass over a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from selfsup.encoders import pooled_features


@torch.inference_mode()
def extract_features(
    encoder: nn.Module,
    loader: Iterable,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    pool: str = "token",
    device: str | torch.device | None = None,
    description: str | None = None,
    last_blocks: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [N, D] float32 on CPU, labels [N] int64)`` for every ``(uint8 images, labels)`` batch.

    ``normalize`` turns a uint8 batch into the encoder's input (the method's ``Normalize``).
    With ``description``, a progress bar is shown. ``last_blocks > 1`` concatenates the features of
    the last blocks (see :func:`selfsup.encoders.pooled_features`).
    """
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    progress = None
    if description:
        total = len(loader) if hasattr(loader, "__len__") else None
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        task = progress.add_task(description, total=total)
        progress.start()
    try:
        for images, targets in loader:
            x = normalize(images.to(device, non_blocking=True))
            feats.append(pooled_features(encoder, x, pool, last_blocks).float().cpu())
            labels.append(torch.as_tensor(targets).long().cpu())
            if progress is not None:
                progress.advance(task)
    finally:
        if progress is not None:
            progress.stop()
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)
