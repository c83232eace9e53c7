"""Attention maps drawn as PNGs: one row of panels per image, the image and then one per head.

Followed: facebookresearch/dino ``visualize_attention.py`` (each head's map upsampled to the image
with nearest neighbours; with a threshold, the image with the patches outside the head's share of
the attention mass dimmed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from selfsup.eval.class_attention import class_token_attention, mass_threshold

DPI = 100
UNREADABLE_FIX = "Leave it out of the images given, or replace the file with one that opens."
MIN_PANEL = 128  # panels of small images are enlarged (by a whole factor) to at least this many pixels


def attention_figure(
    image: torch.Tensor,
    attention: torch.Tensor,
    threshold: float | None = None,
    panel_size: int | None = None,
) -> np.ndarray:
    """One row of panels: the image, then one per head. A head's panel is its attention map
    (upsampled to the image with nearest neighbours, colour-mapped); with ``threshold`` it is the
    image with the patches outside the head's ``threshold`` attention mass dimmed.

    Args:
        image: ``[3, H, W]`` uint8.
        attention: ``[heads, h, w]`` (see :func:`class_token_attention`).
        threshold: share of the attention mass to keep, e.g. 0.6 (DINO's figure), or None.
        panel_size: panel width in pixels (default: the image width times the smallest whole factor
            reaching 128 px). The height follows the image's aspect ratio.

    Returns:
        The rendered figure, ``[panel_h, (1 + heads) * panel_size, 4]`` uint8 RGBA.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if image.ndim != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be a [3, H, W] uint8 tensor, got {image.dtype} {tuple(image.shape)}.")
    if attention.ndim != 3:
        raise ValueError(f"attention must be [heads, h, w], got shape {tuple(attention.shape)}.")
    if panel_size is not None and panel_size < 1:
        raise ValueError(f"panel_size must be >= 1 pixel (or None for the default), got {panel_size!r}.")
    height, width = image.shape[-2:]
    panel_w = panel_size if panel_size is not None else width * math.ceil(MIN_PANEL / width)
    panel_h = max(1, round(panel_w * height / width))
    heads = attention.shape[0]
    columns = 1 + heads
    maps = F.interpolate(attention[None].float().cpu(), size=(height, width), mode="nearest")[0]
    picture = image.permute(1, 2, 0).cpu().numpy()

    figure = Figure(dpi=DPI)
    # + 1e-3 px: the canvas truncates width_inches * dpi to an int, and e.g. 0.29 * 100 < 29 in floats
    figure.set_size_inches((columns * panel_w + 1e-3) / DPI, (panel_h + 1e-3) / DPI)
    canvas = FigureCanvasAgg(figure)
    panels = [picture, *range(heads)]
    if threshold is not None:
        masks = F.interpolate(
            mass_threshold(attention[None].float().cpu(), threshold).float(),
            size=(height, width),
            mode="nearest",
        )[0]
    for column, panel in enumerate(panels):
        axes = figure.add_axes((column / columns, 0.0, 1.0 / columns, 1.0))
        axes.set_axis_off()
        if column == 0:
            axes.imshow(panel, interpolation="nearest", aspect="auto")
            continue
        if threshold is None:
            axes.imshow(maps[panel].numpy(), cmap="inferno", interpolation="nearest", aspect="auto")
        else:
            dimmed = picture * (0.25 + 0.75 * masks[panel].numpy()[..., None])
            axes.imshow(dimmed.astype(np.uint8), interpolation="nearest", aspect="auto")
        axes.text(0.03, 0.97, f"head {panel}", transform=axes.transAxes, color="white", fontsize=7, va="top")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def write_attention_maps(
    encoder: nn.Module,
    images: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    out_dir: str | Path,
    names: Sequence[str],
    threshold: float | None = None,
    panel_size: int | None = None,
    batch_size: int = 32,
) -> tuple[list[Path], list[np.ndarray]]:
    """uint8 images ``[B, 3, H, W]`` → ``out_dir/<name>.png`` each (see :func:`attention_figure`);
    returns the paths and the rendered RGBA arrays. ``normalize`` maps uint8 images to the
    encoder's normalised input (``selfsup.augment.normalize.Normalize``)."""
    if len(names) != len(images):
        raise ValueError(f"{len(images)} images but {len(names)} names.")
    device = next(encoder.parameters()).device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, figures = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        attention = class_token_attention(encoder, normalize(chunk.to(device))).cpu()
        for image, maps, name in zip(chunk, attention, names[start : start + batch_size], strict=True):
            rgba = attention_figure(image, maps, threshold, panel_size)
            path = out_dir / f"{name}.png"
            Image.fromarray(rgba).save(path)
            paths.append(path)
            figures.append(rgba)
    return paths, figures


def save_attention_maps(
    encoder: nn.Module,
    image_paths: Sequence[str | Path],
    out_dir: str | Path,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    threshold: float | None = None,
    panel_size: int | None = None,
) -> list[Path]:
    """For each image file, ``out_dir/<NNN>_<stem>.png``: the image (resized on its shorter side to
    ``image_size`` and centre-cropped) and the last block's class-token attention of each head.

    Args:
        encoder: a timm ViT taking ``image_size`` images (or built with ``dynamic_img_size``).
        mean, std: the encoder's normalisation (its ``pretrained_cfg``), per channel in 0..1.
        threshold, panel_size: see :func:`attention_figure`.
    """
    from selfsup.augment.normalize import Normalize
    from selfsup.data import load_image
    from selfsup.data.images import ImageDecodeError

    if not image_paths:
        raise ValueError("no images given: pass one or more image files.")
    loaded, unreadable = [], []
    for path in image_paths:
        try:
            loaded.append(load_image(path, image_size))
        except ImageDecodeError as err:
            unreadable.append(err)
    if unreadable:  # all of them named at once, before anything is written
        first, others = unreadable[0], unreadable[1:]
        more = (
            f" {len(others)} more cannot be read either: {', '.join(e.path for e in others)}."
            if others
            else ""
        )
        raise ImageDecodeError(first.path, first.reason, fix=f"{UNREADABLE_FIX}{more}") from None
    images = torch.stack(loaded)
    names = [f"{i:03d}_{Path(path).stem}" for i, path in enumerate(image_paths)]
    device = next(encoder.parameters()).device
    normalize = Normalize(mean, std).to(device)
    paths, _ = write_attention_maps(encoder, images, normalize, out_dir, names, threshold, panel_size)
    return paths
