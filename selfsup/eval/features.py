"""Frozen-feature extraction: encoder in eval mode, no gradients, one pass over a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from selfsup.encoders import pooled_features
from selfsup.eval.progress import progress


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
    With ``description``, a progress bar counts the images and the time spent is printed at the end
    (:func:`selfsup.eval.progress.progress`). ``last_blocks > 1`` concatenates the features of
    the last blocks (see :func:`selfsup.encoders.pooled_features`).
    """
    (features,), labels = extract_features_of(
        [encoder], loader, normalize, pool, device, description, last_blocks
    )
    return features, labels


@torch.inference_mode()
def extract_features_of(
    encoders: Sequence[nn.Module],
    loader: Iterable,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    pool: str = "token",
    device: str | torch.device | None = None,
    description: str | None = None,
    last_blocks: int = 1,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """:func:`extract_features` of several encoders in one pass over ``loader``: each batch is read
    and decoded once and goes through every encoder. Returns one ``[N, D]`` tensor per encoder, in
    their order, and the ``[N]`` labels."""
    device = torch.device(device) if device is not None else next(encoders[0].parameters()).device
    was_training = [encoder.training for encoder in encoders]
    for encoder in encoders:
        encoder.eval()
    feats: list[list[torch.Tensor]] = [[] for _ in encoders]
    labels = []
    try:
        with progress(description, _num_samples(loader), "images") as advance:
            for images, targets in loader:
                x = normalize(images.to(device, non_blocking=True))
                for encoder, out in zip(encoders, feats, strict=True):
                    out.append(pooled_features(encoder, x, pool, last_blocks).float().cpu())
                labels.append(torch.as_tensor(targets).long().cpu())
                advance(len(labels[-1]))
    finally:
        for encoder, training in zip(encoders, was_training, strict=True):
            encoder.train(training)
    return [torch.cat(out) for out in feats], torch.cat(labels)


def _num_samples(loader: Iterable) -> int | None:
    """How many samples ``loader`` yields, where it says (a loader over a sized data set)."""
    try:
        return len(loader.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None
