"""An image folder in the ImageFolder layout: ``root/<split>/<class>/<image>`` (images may sit in
nested folders below a class folder: ``root/<split>/<class>/part1/<image>``).

Listing a large folder (ImageNet: 1.28 M files in 1,000 folders) takes minutes on a network file
system; every process of a job doing it at once makes it worse. :func:`cached_scan` stores the list
once (``ImageDataModule.prepare_data`` writes it, on one process per node) and every process reads
it back in ``setup``. With the list, the cache stores the modification time of every folder the
scan walked (the split folder, the class folders and every folder below them). Adding, removing or
renaming a file or folder changes the time of the folder holding it, so the cache is used only
while every one of those times is unchanged: it notices whatever a rescan would, at the cost of one
``stat`` per folder (not per file; ``benchmarks/file_list_cache.py``). A list is cached only when
no folder changed in the :data:`RACY_SECONDS` before its scan began, since a second change within the
resolution of a folder's time would not change it again (the file system's clock must agree with
this machine's within that margin).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from selfsup.atomic import atomic_write_bytes
from selfsup.data.images import IMAGE_EXTENSIONS, ImageDecodeError, ImageMissingError, load_image, read_bytes

Decode = Literal["cpu", "gpu"]
CACHE_FORMAT = 2
RACY_SECONDS = 3.0  # a folder changed this close to its scan is listed but not cached

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
    """List ``(path, class index)`` for every image under ``split_dir/<class>/`` (at any depth).

    ``classes`` fixes the class order (the training split's), so held-out labels use the same indices.

    Raises:
        FileNotFoundError / ValueError naming the folder and the expected layout.
    """
    found_classes, samples, _ = _scan(split_dir, classes)
    return found_classes, samples


def _scan(
    split_dir: Path, classes: list[str] | None
) -> tuple[list[str], list[tuple[str, int]], dict[str, int]]:
    """:func:`scan_folder`, and the modification time (ns) of every folder it walked, keyed by its
    path relative to ``split_dir`` (``"."`` for the split folder itself)."""

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
    times = {".": split_dir.stat().st_mtime_ns}
    for name in found:
        folder = split_dir / name
        files = []
        for dirpath, _, filenames in os.walk(folder, followlinks=True):
            times[os.path.relpath(dirpath, split_dir)] = os.stat(dirpath).st_mtime_ns
            files += [os.path.join(dirpath, f) for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)]
        files.sort()
        if not files:
            raise ValueError(
                f"Class folder '{folder}' contains no images (extensions {', '.join(IMAGE_EXTENSIONS)}). "
                "Add images or remove the folder."
            )
        samples.extend((f, index[name]) for f in files)
    return classes, samples, times


def default_cache_dir(root: str | os.PathLike) -> Path:
    """Where file lists of ``root`` are cached: ``root`` itself if writable (a hidden file beside the
    split folders, never inside them), else ``~/.cache/selfsup/file_lists``."""
    root = Path(root)
    if os.access(root, os.W_OK):
        return root
    return Path.home() / ".cache" / "selfsup" / "file_lists"


def cache_path(split_dir: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The cache file of ``split_dir``'s list under ``cache_dir``."""
    split_dir = Path(split_dir).resolve()
    name = hashlib.sha256(str(split_dir).encode()).hexdigest()[:16]
    return Path(cache_dir) / f".selfsup_files_{split_dir.name}_{name}.json"


def _unchanged(split_dir: Path, times: dict[str, int]) -> bool:
    """Whether every folder in ``times`` still exists with the same modification time."""
    try:
        return all(os.stat(split_dir / rel).st_mtime_ns == ns for rel, ns in times.items())
    except OSError:
        return False


def cached_scan(
    split_dir: str | os.PathLike, classes: list[str] | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """:func:`scan_folder` through a cache file under ``cache_dir`` (no cache when None): read if
    no folder under ``split_dir`` changed since its scan, else scanned and written (atomically; a
    cache folder that cannot be written is skipped with a warning; a folder changed in the last
    :data:`RACY_SECONDS` is scanned every time until it settles)."""
    split_dir = Path(split_dir)
    if cache_dir is None:
        return scan_folder(split_dir, classes)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"Image folder '{split_dir}' does not exist. Expected layout: {LAYOUT}.")
    path = cache_path(split_dir, cache_dir)
    scope = [CACHE_FORMAT, str(split_dir.resolve()), classes]
    try:
        stored = json.loads(path.read_text())
        if stored["scope"] == scope and _unchanged(split_dir, stored["folders"]):
            base, samples = str(split_dir), []
            for label, names in stored["files"]:
                samples += [(os.path.join(base, name), label) for name in names]
            return stored["classes"], samples
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no cache yet, an older format, or unreadable: scan
    started = time.time_ns()
    found_classes, samples, times = _scan(split_dir, classes)
    if max(times.values()) >= started - int(RACY_SECONDS * 1e9):
        return found_classes, samples  # changed just now: a later change might keep these times
    # one [label, [paths]] per class: half the objects of [path, label] pairs, far less work to read
    files = [
        [label, [os.path.relpath(f, split_dir) for f, _ in group]]
        for label, group in itertools.groupby(samples, key=lambda sample: sample[1])
    ]
    try:
        record = {"scope": scope, "folders": times, "classes": found_classes, "files": files}
        atomic_write_bytes(json.dumps(record).encode(), path, what="file list")
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
    here). ``cache_dir`` caches the file list (see :func:`cached_scan`). A listed file that no longer
    exists raises :class:`ImageMissingError`, which names the file and, where the list is cached,
    the stale cache file to delete.
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
        self.cache_file = cache_path(self.split_dir, cache_dir) if cache_dir is not None else None
        self.classes, self.samples = cached_scan(self.split_dir, classes, cache_dir)
        self.targets = [label for _, label in self.samples]
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                if self.decode == "gpu":
                    return read_bytes(path), label
                return load_image(path, self.size), label
            except ImageDecodeError as err:
                if isinstance(err, ImageMissingError):
                    err = self._missing(path)
                if not self.skip_corrupt:
                    raise err from None
                if path not in self.skipped:
                    self.skipped.add(path)
                    reason = f"{err.reason}; {err.fix}" if isinstance(err, ImageMissingError) else err.reason
                    warnings.warn(
                        f"skip_corrupt: skipping unreadable image '{path}' ({reason}); "
                        f"{len(self.skipped)} skipped so far in this process.",
                        stacklevel=2,
                    )
        raise ImageDecodeError(self.split_dir, "no image in this folder could be read")

    def _missing(self, path: str) -> ImageMissingError:
        """The error for a listed file that no longer exists: where the list came from a cache file,
        it names that file as stale and says how to refresh it."""
        if self.cache_file is None or not self.cache_file.is_file():
            return ImageMissingError(path)
        return ImageMissingError(
            path,
            f"The file list cached in '{self.cache_file}' is stale (the folder changed after it was "
            "listed): delete that file, or set `data.file_list_cache: null`, and restart the run to list "
            "the folder again.",
        )
