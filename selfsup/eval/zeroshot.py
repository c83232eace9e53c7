"""Zero-shot classification by text: class embeddings from caption templates (open_clip's
``build_zero_shot_classifier``), images assigned to the most similar class.

Followed: open_clip's ``src/open_clip/zero_shot_classifier.py`` and ``src/training/zero_shot.py``
(top-1 / top-5 over a labelled loader). The model is anything with open_clip's
``encode_image(images, normalize)`` / ``encode_text(tokens, normalize)`` (:class:`selfsup.CLIP`, or an
open_clip model); images arrive as uint8 and are normalised with ``mean`` / ``std``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from selfsup.eval.linear_probe import topk_accuracy


@torch.no_grad()
def zero_shot_classifier(
    model: Any, classnames: Sequence[str], templates: Sequence[str], context_length: int, device: torch.device
) -> torch.Tensor:
    """``[D, classes]`` normalised class embeddings: each the mean of its templates' embeddings."""
    from open_clip import SimpleTokenizer, build_zero_shot_classifier

    tokenizer = SimpleTokenizer(context_length=context_length)
    return build_zero_shot_classifier(model, tokenizer, list(classnames), list(templates), device=device)


def uint8_normalizer(mean: Sequence[float], std: Sequence[float], device: torch.device):
    """``uint8 [B, C, H, W]`` → float images on ``device``, normalised with ``mean`` / ``std`` (0-1 scale)."""
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
    return lambda images: (images.to(device).float() - mean_t) / std_t


@torch.no_grad()
def zero_shot_predictions(
    model: Any,
    loader: Iterable,
    classifier: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [N, classes], labels [N])`` over a loader of ``(uint8 images, labels)`` batches."""
    normalize = uint8_normalizer(mean, std, device)
    logits, labels = [], []
    for images, batch_labels in loader:
        logits.append(model.encode_image(normalize(images), normalize=True).float() @ classifier.float())
        labels.append(batch_labels.to(device))
    return torch.cat(logits), torch.cat(labels)


def zero_shot_accuracy(
    model: Any,
    loader: Iterable,
    classnames: Sequence[str],
    templates: Sequence[str],
    context_length: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, float]:
    """Zero-shot top-1 / top-5 of ``model`` on ``loader`` (in eval mode, restored after)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        classifier = zero_shot_classifier(model, classnames, templates, context_length, device)
        logits, labels = zero_shot_predictions(model, loader, classifier, mean, std, device)
    finally:
        model.train(was_training)
    return {f"top{k}": value for k, value in topk_accuracy(logits, labels).items()}
