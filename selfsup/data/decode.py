"""``decode: gpu``: the DataLoader workers only read files; the device step decodes the batch.

With ``ImageDataModule(decode="gpu")`` a batch's images arrive as a list of 1-D uint8 NumPy arrays
(each a file's encoded bytes). They stay NumPy arrays on purpose: Lightning moves tensors to the
device, and nvJPEG reads the encoded bytes from host memory. In ``on_after_batch_transfer`` the
method (and the fine-tune) calls::

    images = batch_images(images, self.image_size, self.device)   # uint8 [B, 3, S, S] on the device

which leaves a decoded uint8 batch as it is and hands encoded files to :func:`decode_batch`,
which decodes every JPEG of the batch in one batched nvJPEG call
(``torchvision.io.decode_jpeg(list, device="cuda")``), resizes each decoded image so its shorter
side is ``S`` and centre-crops it (antialiased bilinear, as the CPU path), and stacks the batch.
Other formats (PNG, ...) in the batch are decoded on the CPU. Where the device is not CUDA, the
whole batch takes the CPU path, with one warning per process.

Note: the decoded images differ in size, so their resize is one small call per image (launched from
the host without a sync), unlike the augmentation, whose kernel count does not depend on the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.images import decode_bytes, is_jpeg, resize_center_crop

_warned = False


def encoded_collate(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[list[np.ndarray], torch.Tensor]:
    """DataLoader ``collate_fn`` for ``decode: gpu``: ``(list of encoded files as uint8 NumPy
    arrays, int64 labels)``; the arrays share the workers' tensors' memory."""
    images = [np.asarray(data) for data, _ in batch]
    labels = torch.tensor([label for _, label in batch], dtype=torch.int64)
    return images, labels


def batch_images(
    images: torch.Tensor | Sequence[torch.Tensor | np.ndarray], size: int, device: torch.device | str
) -> torch.Tensor:
    """A batch's images as uint8 ``[B, 3, size, size]`` on ``device``: a tensor (decoded by the
    DataLoader workers) as it is, a list or tuple of encoded files (``decode: gpu``) through
    :func:`decode_batch`. The one place a step, the fine-tune and ``selfsup preview`` tell them apart."""
    if isinstance(images, (list, tuple)):
        return decode_batch(images, size, device)
    return images


def decode_batch(
    encoded: Sequence[torch.Tensor | np.ndarray], size: int, device: torch.device | str
) -> torch.Tensor:
    """Encoded image files → ``[B, 3, size, size]`` uint8 on ``device``.

    JPEGs are decoded with nvJPEG where ``device`` is CUDA; everything else, and everything where
    ``device`` is not CUDA (one warning per process), with the CPU path of ``load_image``, to the
    same images up to decoder rounding.
    """
    device = torch.device(device)
    if not encoded:
        raise ValueError("decode_batch got an empty batch.")
    data = [torch.as_tensor(np.asarray(e, dtype=np.uint8)).reshape(-1) for e in encoded]
    if device.type != "cuda":
        _warn_cpu_fallback(device)
        return torch.stack([resize_center_crop(decode_bytes(d, min_size=size), size) for d in data]).to(
            device
        )
    return _decode_cuda(data, size, device)


def _warn_cpu_fallback(device: torch.device) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"data.decode is 'gpu' but the batch is on {device.type}: decoding on the CPU in the training "
            "process instead (slower than decoding in the DataLoader workers). Use data.decode: cpu "
            "without a CUDA device.",
            stacklevel=3,
        )


def _decode_cuda(data: list[torch.Tensor], size: int, device: torch.device) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    jpeg = [i for i, d in enumerate(data) if is_jpeg(d)]
    decoded: list[torch.Tensor | None] = [None] * len(data)
    if jpeg:
        try:
            images = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one file nvJPEG cannot read (CMYK, corrupt): find it, CPU for it
            images = [_decode_one_cuda(data[i], device) for i in jpeg]
        for i, image in zip(jpeg, images, strict=True):
            decoded[i] = image
    out = torch.empty(len(data), 3, size, size, dtype=torch.uint8, device=device)
    for i, image in enumerate(decoded):
        if image is None:  # not a JPEG, or one nvJPEG cannot read: the CPU path, then one copy
            out[i].copy_(
                resize_center_crop(decode_bytes(data[i], min_size=size), size).pin_memory(), non_blocking=True
            )
        else:
            out[i] = _resize_crop_float(image, size)
    return out


def _decode_one_cuda(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """One JPEG with nvJPEG, or None where nvJPEG cannot read it (then the CPU path does)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


def _resize_crop_float(image: torch.Tensor, size: int) -> torch.Tensor:
    """``resize_center_crop`` of a decoded image on a GPU: the central square (a view) resized with
    antialiased bilinear in float32 (PyTorch's CUDA antialiased resize takes floats), rounded back
    to uint8."""
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[None, :, top : top + side, left : left + side].float()
    x = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)
