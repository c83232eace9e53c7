"""A source's split as a dataset: open it, restrict it to some classes, decode it on the CPU.

``ImageDataModule`` builds its splits with these; each source keeps its own layout and errors
(``selfsup.data.arrays``, ``folder``, ``streaming``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from selfsup.data.arrays import ArrayDataset, digits_split, torchvision_split
from selfsup.data.folder import LAYOUT, Decode, ImageFolderDataset, find_split_dir
from selfsup.data.streaming import streaming_dataset


def open_split(
    source: str,
    root: str | os.PathLike | None,
    split: str,
    size: int,
    *,
    seed: int,
    classes: list[str] | None,
    skip_corrupt: bool,
    decode: Decode,
    cache_dir: Path | None,
    stl10_unlabeled: bool,
) -> Dataset | None:
    """The whole ``split`` of ``source`` at ``size`` pixels, or None when it has no such split (only
    ``val`` may be missing). ``classes`` fixes a folder's class order (the training split's);
    ``skip_corrupt``, ``decode`` and ``cache_dir`` are the folder source's, ``seed`` the streaming
    source's shuffle, ``stl10_unlabeled`` STL-10's."""
    if source == "digits":
        return digits_split(split, size)
    if source == "streaming":
        dataset = streaming_dataset(root, split, size, shuffle=split == "train", seed=seed)
        if dataset is None and split == "train":
            raise FileNotFoundError(f"'{root}' has no optimised 'train' split.")
        return dataset
    if source == "folder":
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"Data root '{root}' does not exist. Expected layout: {LAYOUT}.")
        split_dir = find_split_dir(root, split)
        if split_dir is None:
            if split == "train":
                raise FileNotFoundError(f"'{root}' has no 'train' folder. Expected layout: {LAYOUT}.")
            return None
        return ImageFolderDataset(
            split_dir, size, classes=classes, skip_corrupt=skip_corrupt, decode=decode, cache_dir=cache_dir
        )
    return torchvision_split(source, root, split, size, stl10_unlabeled=stl10_unlabeled)


def keep_classes(dataset: Dataset, all_classes: list[str], keep: list[str], what: str) -> Dataset:
    """``dataset`` restricted to the classes ``keep`` (names among ``all_classes``), relabelled
    ``0..len(keep)-1`` in that order. A copy of the same type (an image folder keeps its file list,
    an array set its tensors), so decoding, subsets and ``decode: gpu`` work unchanged."""
    unknown = [name for name in keep if name not in all_classes]
    if unknown:
        raise ValueError(f"classes {unknown} are not classes of the {what}; it has {all_classes}.")
    new_label = {all_classes.index(name): i for i, name in enumerate(keep)}
    dataset = copy.copy(dataset)
    if isinstance(dataset, ImageFolderDataset):
        dataset.samples = [(path, new_label[label]) for path, label in dataset.samples if label in new_label]
        dataset.targets = [label for _, label in dataset.samples]
    elif isinstance(dataset, ArrayDataset):
        mapping = torch.full((len(all_classes),), -1, dtype=torch.long)
        mapping[list(new_label)] = torch.tensor(list(new_label.values()), dtype=torch.long)
        labelled = (dataset.labels >= 0) & (dataset.labels < len(mapping))  # unlabelled (-1): dropped
        labels = torch.where(labelled, mapping[torch.where(labelled, dataset.labels, 0)], -1)
        kept = labels >= 0
        dataset.images, dataset.labels = dataset.images[kept], labels[kept]
        dataset.targets = dataset.labels.tolist()
    else:
        raise ValueError(f"classes cannot restrict {type(dataset).__name__} (the {what}).")
    dataset.classes = list(keep)
    return dataset


def decoded_on_cpu(dataset: Dataset) -> Dataset:
    """``dataset`` with its images decoded in the workers (a copy, where it is a ``decode: gpu``
    folder), for the loaders whose users expect uint8 tensors (features, probes, previews)."""
    if isinstance(dataset, ImageFolderDataset) and dataset.decode == "gpu":
        dataset = copy.copy(dataset)
        dataset.decode = "cpu"
    elif isinstance(dataset, Subset) and isinstance(dataset.dataset, ImageFolderDataset):
        dataset = Subset(decoded_on_cpu(dataset.dataset), dataset.indices)
    return dataset
