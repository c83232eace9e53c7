"""Segmentation data: a folder of images and masks, as ``(uint8 image, int64 mask)`` batches.

Layout: ``root/<split>/images/<name>.<ext>`` and ``root/<split>/masks/<name>.png``, where a mask
pixel holds the class index and ``ignore_index`` (255) marks pixels without a label; ``<split>`` is
``train`` and ``val`` (or ``test``).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from selfsup.data.datamodule import available_cores
from selfsup.data.folder import find_split_dir
from selfsup.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_image

SEG_LAYOUT = "root/train/images/<name>.<ext> with root/train/masks/<name>.png (class index per pixel), and the same under root/val"


def load_mask(path: str | os.PathLike, size: int) -> torch.Tensor:
    """``[size, size]`` int64 class indices: shorter side resized (nearest), centre crop."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise ImageDecodeError(
                    path, f"a mask must be single-channel class indices, got mode {img.mode}"
                )
            arr = np.array(img, dtype=np.int64)
    except ImageDecodeError:
        raise
    except (OSError, ValueError) as err:
        raise ImageDecodeError(path, f"{type(err).__name__}: {err}") from None
    mask = torch.from_numpy(arr)[None, None].float()
    h, w = mask.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    mask = F.interpolate(mask, size=(new_h, new_w), mode="nearest")[0, 0].long()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return mask[top : top + size, left : left + size].contiguous()


class SegmentationFolder(Dataset):
    def __init__(self, split_dir: str | os.PathLike, size: int) -> None:
        split_dir = Path(split_dir)
        images, masks = split_dir / "images", split_dir / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise FileNotFoundError(
                f"'{split_dir}' needs 'images' and 'masks' folders. Expected layout: {SEG_LAYOUT}."
            )
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"'{images}' contains no images. Expected layout: {SEG_LAYOUT}.")
        self.samples = []
        for image in files:
            mask = masks / f"{image.stem}.png"
            if not mask.is_file():
                raise FileNotFoundError(
                    f"image '{image}' has no mask '{mask}'. Expected layout: {SEG_LAYOUT}."
                )
            self.samples.append((image, mask))
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.samples[index]
        return load_image(image, self.size), load_mask(mask, self.size)


class SegmentationDataModule(L.LightningDataModule):
    """Batches ``(images [B, 3, S, S] uint8, masks [B, S, S] int64)`` from a segmentation folder.

    Args:
        root: the folder (see the module docstring for its layout).
        num_classes: classes in the masks (mask values ``>= num_classes`` other than ``ignore_index``
            are an error when the batch is used).
        image_size: side of the square images and masks.
        ignore_index: mask value of unlabelled pixels.
    """

    def __init__(
        self,
        root: str,
        num_classes: int,
        image_size: int = 32,
        batch_size: int = 8,
        num_workers: int = 2,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if not Path(root).is_dir():
            raise FileNotFoundError(f"Data root '{root}' does not exist. Expected layout: {SEG_LAYOUT}.")
        self.root = root
        self.num_classes = num_classes
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.ignore_index = ignore_index
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.classes = [str(i) for i in range(num_classes)]
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            train_dir = find_split_dir(self.root, "train")
            if train_dir is None:
                raise FileNotFoundError(
                    f"'{self.root}' has no 'train' folder. Expected layout: {SEG_LAYOUT}."
                )
            self.train_set = SegmentationFolder(train_dir, self.image_size)
            val_dir = find_split_dir(self.root, "val")
            self.val_set = SegmentationFolder(val_dir, self.image_size) if val_dir else None

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=min(self.num_workers, available_cores()),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, True, drop_last=len(self.train_set) >= self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        return [] if self.val_set is None else self._loader(self.val_set, False)
