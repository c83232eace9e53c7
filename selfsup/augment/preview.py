"""What the augmentation of a config does to real images, as one PNG (``selfsup preview``, whose
command lives in :mod:`selfsup.commands`: it builds the config's model and data through LightningCLI,
which the augmentation does not import).

The first row holds the originals with the crop box of every view drawn on them; each following
row holds one view, exactly as the training step receives it (the method's declared views, drawn
with the same code), de-normalised for display. Small images are enlarged (nearest) to stay legible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


def views_of(module) -> object:
    """The :class:`~selfsup.augment.MultiViewAugment` a module trains with."""
    augment = getattr(module, "view_augment", None)
    if augment is None and hasattr(module, "task"):
        augment = getattr(module.task.augment, "augment", None)
    if augment is None or not hasattr(augment, "forward_with_params"):
        raise ValueError(f"{type(module).__name__} declares no views to preview.")
    return augment


@torch.no_grad()
def preview_grid(module, images: torch.Tensor, seed: int = 0, min_side: int = 96) -> torch.Tensor:
    """``[3, H, W]`` float grid in [0, 1] for a uint8 batch ``[N, 3, h, w]`` (see the module docstring)."""
    from torchvision.utils import draw_bounding_boxes, make_grid

    augment = views_of(module)
    generator = torch.Generator().manual_seed(seed)
    views, params = augment.forward_with_params(images, generator=generator)
    mean = torch.tensor(module.mean).view(1, -1, 1, 1)
    std = torch.tensor(module.std).view(1, -1, 1, 1)
    side = max(min_side, images.shape[-1])
    scale = side / images.shape[-1]
    originals = F.interpolate(images.float(), size=(side, side), mode="nearest").to(torch.uint8)
    drawn = []
    for i, image in enumerate(originals):
        boxes = torch.stack([p.boxes[i].float() * scale for p in params])
        drawn.append(
            draw_bounding_boxes(
                image, boxes, colors=[COLOURS[j % len(COLOURS)] for j in range(len(boxes))], width=2
            )
        )
    rows = [torch.stack(drawn).float() / 255]
    for view in views:
        x = (view.float().cpu() * std + mean).clamp(0, 1)
        rows.append(F.interpolate(x, size=(side, side), mode="nearest"))
    return make_grid(torch.cat(rows), nrow=len(images), padding=2, pad_value=1.0)
