"""Decoding and resizing on the CPU: every image becomes a ``[3, size, size]`` uint8 tensor.

This is all the DataLoader does; augmentation happens later, on the device, on whole batches.

JPEG, PNG, GIF and WebP are decoded by ``torchvision.io.decode_image`` (libjpeg-turbo, libpng,
libwebp) straight into uint8 tensors, and resized as uint8 with an antialiased bilinear filter
(PyTorch's vectorised uint8 kernel): about 3x the images/s of decoding with PIL and resizing in
float32 (``benchmarks/decode_throughput.py``). JPEGs at least twice the target size are decoded at
a reduced scale by PIL (``draft``, libjpeg's DCT scaling), as before. Other formats (BMP, TIFF,
PPM/PGM/PBM) and the image modes torchvision does not read go through PIL, as before. Either way grayscale, palette, CMYK,
16-bit and RGBA images become 8-bit RGB (alpha dropped, 16 bits rescaled to 8).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")

# leading bytes of the formats torchvision decodes
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")


DECODE_FIX = (
    "Delete or replace the file, or set `data.skip_corrupt: true` to skip unreadable images with a warning."
)
MISSING_FIX = "It was deleted or moved after the folder was listed: restart the run to list the folder again."


class ImageDecodeError(RuntimeError):
    """An image file that cannot be decoded. ``path`` names the file, ``fix`` says what to do."""

    def __init__(self, path: str | os.PathLike, reason: str, fix: str = DECODE_FIX) -> None:
        self.path = str(path)
        self.reason = reason
        self.fix = fix
        super().__init__(f"Cannot read image '{self.path}': {reason}. {fix}")


class ImageMissingError(ImageDecodeError):
    """A listed image file that no longer exists: the list is out of date, the file is not corrupt."""

    def __init__(self, path: str | os.PathLike, fix: str = MISSING_FIX) -> None:
        super().__init__(path, "it no longer exists (FileNotFoundError)", fix)


def read_bytes(path: str | os.PathLike) -> torch.Tensor:
    """The file's bytes as a 1-D uint8 tensor (what ``decode: gpu`` sends to the device step).

    Raises:
        ImageMissingError: the file does not exist.
        ImageDecodeError: the file is empty or cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageMissingError(path) from None
    except OSError as err:
        raise ImageDecodeError(path, f"{type(err).__name__}: {err}") from None
    if not data:
        raise ImageDecodeError(path, "the file is empty (0 bytes)")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def is_torchvision_format(data: torch.Tensor | np.ndarray) -> bool:
    """Whether torchvision decodes these bytes (JPEG, PNG, GIF, WebP), by their signature."""
    head = bytes(np.asarray(data[:12]))
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def is_jpeg(data: torch.Tensor | np.ndarray) -> bool:
    """Whether these bytes are a JPEG file (what nvJPEG decodes)."""
    return bytes(np.asarray(data[:3])) == b"\xff\xd8\xff"


def decode_bytes(
    data: torch.Tensor, path: str | os.PathLike = "<bytes>", min_size: int | None = None
) -> torch.Tensor:
    """Encoded file bytes (1-D uint8) → ``[3, H, W]`` uint8 RGB; ``path`` only names the file in errors.

    ``min_size`` allows a JPEG at least twice that size (shorter side) to be decoded at a reduced
    scale (libjpeg's DCT scaling, through PIL's ``draft``, as selfsup always did), keeping its
    shorter side at least ``min_size``: a 2000 x 1500 photo for a 224-px image decodes 16x fewer
    pixels.

    Raises:
        ImageDecodeError: the bytes are empty, truncated, or not an image.
    """
    if data.numel() == 0:
        raise ImageDecodeError(path, "the file is empty (0 bytes)")
    if not is_torchvision_format(data):
        return _decode_pil(bytes(data.numpy()), path)
    if min_size is not None and is_jpeg(data):
        large = _decode_reduced_jpeg(data, path, min_size)
        if large is not None:
            return large
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        if "unsupported" in reason.lower() or "not supported" in reason.lower():
            return _decode_pil(bytes(data.numpy()), path)  # a variant torchvision does not read
        raise ImageDecodeError(path, reason) from None
    if image.ndim == 4:  # an animated GIF: its first frame, as PIL reads it
        image = image[0]
    if image.dtype == torch.uint16:  # 16-bit PNG: rescale to 8 bits rather than clip
        image = (image.float() * (255.0 / 65535.0) + 0.5).to(torch.uint8)
    return image


def _decode_reduced_jpeg(data: torch.Tensor, path: str | os.PathLike, min_size: int) -> torch.Tensor | None:
    """A JPEG whose shorter side is at least ``2 * min_size``, decoded at 1/2, 1/4 or 1/8 scale by
    PIL; None for a smaller one (torchvision decodes those faster)."""
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:  # reads the header only
            if min(img.size) < 2 * min_size:
                return None
            img.draft("RGB", (min_size, min_size))
            img.load()
            rgb = _to_rgb(img)
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(path, f"{type(err).__name__}: {err}") from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1)  # channels-last


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


def _decode_pil(data: bytes, path: str | os.PathLike) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = _to_rgb(img)
    except UnidentifiedImageError:
        raise ImageDecodeError(path, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(path, f"{type(err).__name__}: {err}") from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def load_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """Decode ``path`` into a ``[3, H, W]`` uint8 tensor, resized so the shorter side is ``size`` and
    centre-cropped to ``size x size`` (no resize when ``size`` is None).

    Raises:
        ImageDecodeError: the file is empty, truncated, or not an image.
    """
    image = decode_bytes(read_bytes(path), path, min_size=size)
    return image if size is None else resize_center_crop(image, size)


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[C, H, W]`` or ``[N, C, H, W]`` uint8 → same layout, ``size x size``: the central square of
    side ``min(H, W)`` (what a centre crop after resizing the shorter side keeps), resized to
    ``size`` (bilinear, antialiased when shrinking, computed on uint8).

    Cropping first resizes only the pixels that are kept (a quarter fewer for a 4:3 photo). PyTorch's
    vectorised uint8 resize works on channels-last images, which is how the decoders lay them out:
    the square is copied once as channels-last (cheaper than the strided view, about 40 % faster
    in all), and the result back to the usual layout.
    """
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[..., top : top + side, left : left + side]
    if side == size:
        return square.contiguous()
    batch = square if square.ndim == 4 else square[None]
    batch = batch.contiguous(memory_format=torch.channels_last)
    out = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = out.contiguous()
    return out if square.ndim == 4 else out[0]
