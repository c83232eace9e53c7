"""An image folder in the ImageFolder layout: ``root/<split>/<class>/<image>``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from selfsup.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_image

LAYOUT = "root/train/<class>/<image>, and root/val/<class>/<image> or root/test/<class>/<image> for the held-out split"


def find_split_dir(root: str | os.PathLike, split: str) -> Path | None:
    """``root/train`` for ``split="train"``; ``root/val`` or else ``root/test`` for ``"val"``; None if absent."""
    root = Path(root)
    names = ("train",) if split == "train" else ("val", "test")
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def scan_folder(split_dir: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """List ``(path, class index)`` for every image under ``split_dir/<class>/``.

    ``classes`` fixes the class order (the training split's), so held-out labels use the same indices.

    Raises:
        FileNotFoundError / ValueError naming the folder and the expected layout.
    """
    if not split_dir.is_dir():
        raise FileNotFoundError(f"Image folder '{split_dir}' does not exist. Expected layout: {LAYOUT}.")
    found = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())
    if not found:
        raise ValueError(
            f"'{split_dir}' has no class folders. Expected layout: {LAYOUT} (one sub-folder per class, "
            "even if there is only one class)."
        )
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(
                f"'{split_dir}' has class folders that the training split lacks: {unknown[:5]}. "
                "Both splits must use the same class names."
            )
    index = {name: i for i, name in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    for name in found:
        folder = split_dir / name
        files = sorted(
            str(Path(dirpath) / f)
            for dirpath, _, filenames in os.walk(folder, followlinks=True)
            for f in filenames
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise ValueError(
                f"Class folder '{folder}' contains no images (extensions {', '.join(IMAGE_EXTENSIONS)}). "
                "Add images or remove the folder."
            )
        samples.extend((f, index[name]) for f in files)
    return classes, samples


class ImageFolderDataset(Dataset):
    """``(uint8 [3, size, size] image, int label)`` from ``split_dir/<class>/<image>``.

    Grayscale, palette, 16-bit and CMYK images become RGB (see ``selfsup.data.images``). An
    unreadable file raises :class:`ImageDecodeError` naming it; with ``skip_corrupt=True`` it is
    replaced by the next readable image (keeping the batch size fixed, which DDP's gathers need), a
    warning names the file, and ``self.skipped`` counts the skips in this process.
    """

    def __init__(
        self,
        split_dir: str | os.PathLike,
        size: int,
        classes: list[str] | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.split_dir = Path(split_dir)
        self.size = size
        self.skip_corrupt = skip_corrupt
        self.classes, self.samples = scan_folder(self.split_dir, classes)
        self.targets = [label for _, label in self.samples]
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                return load_image(path, self.size), label
            except ImageDecodeError as err:
                if not self.skip_corrupt:
                    raise
                if path not in self.skipped:
                    self.skipped.add(path)
                    warnings.warn(
                        f"skip_corrupt: skipping unreadable image '{path}' ({err.reason}); "
                        f"{len(self.skipped)} skipped so far in this process.",
                        stacklevel=2,
                    )
        raise ImageDecodeError(self.split_dir, "no image in this folder could be read")
