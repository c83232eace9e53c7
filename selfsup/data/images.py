"""Decoding and resizing on the CPU: every image becomes a ``[3, size, size]`` uint8 tensor.

This is all the DataLoader does; augmentation happens later, on the device, on whole batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


class ImageDecodeError(RuntimeError):
    """An image file that cannot be decoded. ``path`` names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"Cannot read image '{self.path}': {reason}. Delete or replace the file, or set "
            "`data.skip_corrupt: true` to skip unreadable images with a warning."
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB. Grayscale and palette images are expanded to three channels; the
    alpha channel of RGBA / LA / transparent-palette images is dropped (as torchvision's ImageFolder
    does); 16- and 32-bit integer grayscale is rescaled to 8 bits instead of clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """Decode ``path`` into a ``[3, H, W]`` uint8 tensor, resized so the shorter side is ``size`` and
    centre-cropped to ``size x size`` (no resize when ``size`` is None).

    Raises:
        ImageDecodeError: the file is empty, truncated, or not an image.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError(path, "the file is empty (0 bytes)")
        with Image.open(path) as img:
            if size is not None and img.format == "JPEG":
                img.draft("RGB", (size, size))  # decode large JPEGs at a reduced scale (>= size)
            img.load()
            rgb = _to_rgb(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(path, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(path, f"{type(err).__name__}: {err}") from None
    tensor = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    return tensor if size is None else resize_center_crop(tensor, size)


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[C, H, W]`` or ``[N, C, H, W]`` uint8 → same layout with shorter side resized to ``size``
    (bicubic, antialiased when shrinking) and centre-cropped to ``size x size``."""
    batched = image.ndim == 4
    x = image if batched else image.unsqueeze(0)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        if min(h, w) != size:
            scale = size / min(h, w)
            new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
            x = (
                F.interpolate(
                    x.float(), size=(new_h, new_w), mode="bicubic", antialias=scale < 1, align_corners=False
                )
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
            )
            h, w = new_h, new_w
        top, left = (h - size) // 2, (w - size) // 2
        x = x[..., top : top + size, left : left + size].contiguous()
    return x if batched else x[0]
