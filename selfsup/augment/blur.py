"""Gaussian blur with a per-sample standard deviation, on the group of samples that get it.

Kornia's ``RandomGaussianBlur`` builds one kernel per sample in a Python loop; torchvision's
``gaussian_blur`` takes one sigma per call. Here every sample's 1-D kernel is one row of a
``[N, K]`` tensor (built on the host from the CPU-drawn sigmas), and the blur is separable with
torchvision's reflect padding, in one of two equivalent forms:

two depthwise convolutions (``groups = 3 N``, vertical then horizontal) after one reflect pad
(:func:`blur`), or two batched matmuls with per-sample banded ``[S, S]`` matrices that hold the
kernel and the padding (:func:`blur_matmul`, ``out = By @ x @ Bx^T``). The convolutions are used:
on one CPU thread they ran 1.5x faster than the matmuls at 224 px (``benchmarks/augment_throughput.py
--alternatives``), and on a GPU they are memory-bound kernels where the matmuls would do S/K times
the arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.augment.resample import separable


def gaussian_kernels(
    sigma: torch.Tensor, kernel_size: int, apply: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, K]`` float32 normalised 1-D Gaussian kernels (torchvision's ``_get_gaussian_kernel1d``:
    ``exp(-x^2 / (2 sigma^2))`` at ``x = -(K-1)/2 .. (K-1)/2``); rows where ``apply`` is False are
    the identity (a centred 1)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, dtype=torch.float64, device=sigma.device)
    kernels = torch.softmax(-(x[None, :] ** 2) / (2 * sigma.double()[:, None] ** 2), dim=1)
    if apply is not None:
        identity = (x == 0).double().expand_as(kernels)
        kernels = torch.where(apply[:, None], kernels, identity)
    return kernels.float()


def _check(kernel_size: int, height: int, width: int) -> int:
    pad = kernel_size // 2
    if pad >= min(height, width):
        raise ValueError(
            f"a blur kernel of {kernel_size} px needs images larger than {pad} px; got {height}x{width}. "
            "Lower blur_kernel_fraction or turn blur off for this view."
        )
    return pad


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` images, ``[N, K]`` kernels → each image blurred with its own kernel:
    reflect pad, then two depthwise convolutions. Returns a new tensor."""
    n, c, height, width = x.shape
    pad = _check(kernels.shape[1], height, width)
    weight = kernels.to(x.dtype).repeat_interleave(c, dim=0)  # [N*C, K]: one row per channel
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect").view(1, n * c, height + 2 * pad, width + 2 * pad)
    out = F.conv2d(padded, weight[:, None, :, None], groups=n * c)  # vertical
    out = F.conv2d(out, weight[:, None, None, :], groups=n * c)  # horizontal
    return out.view(n, c, height, width)


def banded_matrices(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, size, size]`` matrices ``B`` with ``(B v)_i = sum_t k_t v[reflect(i + t - K//2)]``: the
    1-D blur of a line of ``size`` pixels with reflect padding, as a matrix."""
    n, k = kernels.shape
    pad = _check(k, size, size)
    position = (
        torch.arange(size, device=kernels.device)[:, None] + torch.arange(k, device=kernels.device) - pad
    )
    position = position.abs()  # reflect at the start: -1 -> 1
    position = torch.where(position > size - 1, 2 * (size - 1) - position, position)  # and at the end
    matrices = torch.zeros(n, size, size, dtype=kernels.dtype, device=kernels.device)
    return matrices.scatter_add_(2, position.expand(n, size, k), kernels[:, None, :].expand(n, size, k))


def blur_matmul(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Same as :func:`blur`, as two batched matmuls with banded matrices (the alternative)."""
    height, width = x.shape[-2:]
    rows = banded_matrices(kernels, height)
    cols = rows if width == height else banded_matrices(kernels, width)
    return separable(x, rows, cols)
