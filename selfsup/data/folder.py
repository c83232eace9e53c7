"""An image folder in the ImageFolder layout: ``root/<split>/<class>/<image>``.

Listing a large folder (ImageNet: 1.28 M files in 1,000 folders) takes minutes on a network file
system; every process of a job doing it at once makes it worse. :func:`cached_scan` stores the list
once (``ImageDataModule.prepare_data`` writes it, on one process per node) and every process reads
it back in ``setup``. The cache is keyed on the folder's path, the class order and the
modification times of the split folder and of every class folder, so adding or removing a file in
a class folder (which changes that folder's time) or adding a class makes it scan again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from selfsup.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_image, read_bytes

Decode = Literal["cpu", "gpu"]
CACHE_FORMAT = 1

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


def default_cache_dir(root: str | os.PathLike) -> Path:
    """Where file lists of ``root`` are cached: ``root`` itself if writable (a hidden file beside the
    split folders, never inside them), else ``~/.cache/selfsup/file_lists``."""
    root = Path(root)
    if os.access(root, os.W_OK):
        return root
    return Path.home() / ".cache" / "selfsup" / "file_lists"


def _cache_key(split_dir: Path, classes: list[str] | None) -> str:
    stamps = [(".", split_dir.stat().st_mtime_ns)]
    stamps += sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(split_dir) if e.is_dir())
    payload = json.dumps([CACHE_FORMAT, str(split_dir.resolve()), classes, stamps])
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_path(split_dir: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The cache file of ``split_dir``'s list under ``cache_dir``."""
    split_dir = Path(split_dir).resolve()
    name = hashlib.sha256(str(split_dir).encode()).hexdigest()[:16]
    return Path(cache_dir) / f".selfsup_files_{split_dir.name}_{name}.json"


def cached_scan(
    split_dir: str | os.PathLike, classes: list[str] | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """:func:`scan_folder` through a cache file under ``cache_dir`` (no cache when None): read if
    its key matches the folder, else scanned and written (atomically; a cache folder that cannot be
    written is skipped with a warning)."""
    split_dir = Path(split_dir)
    if cache_dir is None:
        return scan_folder(split_dir, classes)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"Image folder '{split_dir}' does not exist. Expected layout: {LAYOUT}.")
    key = _cache_key(split_dir, classes)
    path = cache_path(split_dir, cache_dir)
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored["classes"], [(str(split_dir / f), label) for f, label in stored["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or unreadable: scan
    found_classes, samples = scan_folder(split_dir, classes)
    files = [[os.path.relpath(f, split_dir), label] for f, label in samples]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
            json.dump({"key": key, "classes": found_classes, "files": files}, handle)
        os.replace(handle.name, path)
    except OSError as err:
        warnings.warn(
            f"could not cache the file list of '{split_dir}' in '{path.parent}' ({err}).", stacklevel=2
        )
    return found_classes, samples


class ImageFolderDataset(Dataset):
    """``(uint8 [3, size, size] image, int label)`` from ``split_dir/<class>/<image>``.

    Grayscale, palette, 16-bit and CMYK images become RGB (see ``selfsup.data.images``). An
    unreadable file raises :class:`ImageDecodeError` naming it; with ``skip_corrupt=True`` it is
    replaced by the next readable image (keeping the batch size fixed, which DDP's gathers need), a
    warning names the file, and ``self.skipped`` counts the skips in this process.

    With ``decode="gpu"`` a sample's image is the file's encoded bytes (1-D uint8), decoded later on
    the device (``selfsup.data.decode``); ``skip_corrupt`` then cannot apply (nothing is decoded
    here). ``cache_dir`` caches the file list (see :func:`cached_scan`).
    """

    def __init__(
        self,
        split_dir: str | os.PathLike,
        size: int,
        classes: list[str] | None = None,
        skip_corrupt: bool = False,
        decode: Decode = "cpu",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if decode not in ("cpu", "gpu"):
            raise ValueError(f"decode must be 'cpu' or 'gpu', got {decode!r}.")
        if decode == "gpu" and skip_corrupt:
            raise ValueError(
                "skip_corrupt needs decode: cpu (with decode: gpu the files are decoded in the training step, "
                "where a batch cannot shrink); check the folder once with decode: cpu and skip_corrupt: true."
            )
        self.split_dir = Path(split_dir)
        self.size = size
        self.skip_corrupt = skip_corrupt
        self.decode = decode
        self.classes, self.samples = cached_scan(self.split_dir, classes, cache_dir)
        self.targets = [label for _, label in self.samples]
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            if self.decode == "gpu":
                return read_bytes(path), label
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
