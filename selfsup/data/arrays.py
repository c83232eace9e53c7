"""In-memory image sets: scikit-learn's digits (the embedded default) and torchvision's CIFAR-10/100
and STL-10, each as ``(uint8 [3, size, size], label)`` samples. Downloads happen only in
``ImageDataModule.prepare_data`` and only with ``download=True``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.images import resize_center_crop

TORCHVISION_SOURCES = ("cifar10", "cifar100", "stl10")


class ArrayDataset(Dataset):
    """Images held in memory as a ``[N, 3, h, w]`` uint8 tensor, resized on access to ``size``.

    Labels are ints; ``-1`` marks an unlabelled sample (STL-10's unlabelled split).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int, classes: list[str]) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected [N, 3, H, W] uint8 images, got {tuple(images.shape)} {images.dtype}.")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels.")
        self.size = size
        self.classes = classes
        self.labels = labels.long()
        small = images.shape[-1] * images.shape[-2] <= 64 * 64 and len(images) <= 20_000
        # resize tiny images once up front (cheap); large sets are resized per sample in the workers
        self.images = resize_center_crop(images, size) if small else images
        self.targets = self.labels.tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if image.shape[-1] != self.size or image.shape[-2] != self.size:
            image = resize_center_crop(image, self.size)
        return image, int(self.labels[index])


def digits_split(split: str, size: int, test_fraction: float = 0.2, seed: int = 0) -> ArrayDataset:
    """scikit-learn's 8x8 handwritten digits (1,797 real images, 10 classes), shipped with the
    library: no download. A fixed stratified split keeps ``test_fraction`` held out."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 grey levels → 0..255
    indices = np.arange(len(pixels))
    train_idx, test_idx = train_test_split(
        indices, test_size=test_fraction, stratify=digits.target, random_state=seed
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    images = torch.from_numpy(pixels[idx]).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target[idx])
    return ArrayDataset(images, labels, size, classes=[str(d) for d in range(10)])


def _missing(source: str, root: Path, err: Exception) -> FileNotFoundError:
    return FileNotFoundError(
        f"{source} was not found under '{root}' ({err}). Set `data.download: true` to download it "
        f"into that folder (needs network), or point `data.root` at an existing copy."
    )


def torchvision_split(
    source: str,
    root: str | os.PathLike,
    split: str,
    size: int,
    download: bool = False,
    stl10_unlabeled: bool = True,
) -> ArrayDataset:
    """CIFAR-10, CIFAR-100 or STL-10 from torchvision's files under ``root``.

    ``split`` is ``train`` or ``val`` (the official test set). For STL-10 the training split adds the
    100,000 unlabelled images (label ``-1``) when ``stl10_unlabeled`` is set.
    """
    from torchvision import datasets

    root = Path(root)
    try:
        if source in ("cifar10", "cifar100"):
            cls = datasets.CIFAR10 if source == "cifar10" else datasets.CIFAR100
            ds = cls(str(root), train=split == "train", download=download)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            return ArrayDataset(images, torch.as_tensor(ds.targets), size, classes=list(ds.classes))
        if source == "stl10":
            splits = ("train+unlabeled" if stl10_unlabeled else "train") if split == "train" else "test"
            ds = datasets.STL10(str(root), split=splits, download=download)
            return ArrayDataset(
                torch.from_numpy(ds.data),
                torch.from_numpy(ds.labels.astype(np.int64)),
                size,
                classes=list(ds.classes),
            )
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise _missing(source, root, err) from None
    raise ValueError(f"unknown torchvision source {source!r}; choose one of {TORCHVISION_SOURCES}.")


def download_torchvision(source: str, root: str | os.PathLike) -> None:
    """Download both splits of a torchvision source into ``root`` (called from ``prepare_data``)."""
    from torchvision import datasets

    if source in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if source == "cifar10" else datasets.CIFAR100
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    elif source == "stl10":
        datasets.STL10(str(root), split="train+unlabeled", download=True)
        datasets.STL10(str(root), split="test", download=True)
