"""``ImageDataModule``: uint8 image batches of one fixed size, with labels when the data has them."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup._lightning import batches_done_in_epoch
from selfsup.data.arrays import TORCHVISION_SOURCES, download_torchvision
from selfsup.data.decode import encoded_collate
from selfsup.data.folder import LAYOUT, Decode, cached_scan, default_cache_dir, find_split_dir
from selfsup.data.resumable import ResumableDataLoader, ResumableSampler
from selfsup.data.splits import decoded_on_cpu, keep_classes, open_split
from selfsup.data.streaming import read_manifest

Source = Literal["digits", "folder", "cifar10", "cifar100", "stl10", "streaming"]
Split = Literal["train", "val"]


class ImageDataModule(L.LightningDataModule):
    """Decodes and resizes images on the CPU; nothing else (augmentation runs on the device).

    Batches are ``(images, labels)``: ``images`` is ``[B, 3, image_size, image_size]`` uint8,
    ``labels`` is ``[B]`` int64 (``-1`` where a sample has no label). With ``decode="gpu"``,
    ``images`` of the training and validation batches is instead a list of the files' encoded bytes
    (1-D uint8 NumPy arrays, which Lightning leaves on the host), which the method decodes on the
    device with ``selfsup.data.decode.decode_batch``; ``eval_dataloader`` always decodes on the CPU.

    Args:
        source: ``digits`` (scikit-learn's 8x8 digits: real, offline, the default), ``folder`` (an
            ImageFolder: ``root/train/<class>/*`` and ``root/val/<class>/*`` or ``root/test/<class>/*``),
            ``cifar10``, ``cifar100`` or ``stl10`` (torchvision's files under ``root``), or ``streaming``
            (a folder written by ``selfsup data optimize``, local or ``s3://...``, streamed with LitData
            and sharded across processes and workers).
        root: data folder (required for every source but ``digits``). A relative one is read from
            the current folder, and recorded in the saved hyperparameters (and so in checkpoints)
            as an absolute path.
        image_size: side of the square images in every batch (shorter side resized, then centre crop).
        batch_size: images per batch per process. The global batch is this times the number of
            processes (and of accumulated batches). More than the training images each process
            gets is a warning (an epoch would be one short batch).
        num_workers: DataLoader worker processes for decoding.
        download: let ``prepare_data`` download a torchvision source into ``root`` (needs network).
        skip_corrupt: replace unreadable images (folder source) by the next readable one with a
            warning, instead of stopping with an error naming the file.
        train_subset: use only this many training images (a fixed random subset; for quick runs).
        val_subset: likewise for the held-out split.
        subset_seed: seed of those subsets.
        stl10_unlabeled: for STL-10, add the 100k unlabelled images to the training split.
        pin_memory: pin host memory for faster copies to a GPU (ignored on CPU-only machines).
        seed: seed of the training data order (shuffled per epoch from ``(seed, epoch)``, the same
            on every process, so the shards stay disjoint), and of the streaming shuffle.
        decode: ``cpu``: the DataLoader workers decode and resize (torchvision's decoders, uint8
            antialiased resize). ``gpu`` (folder source): the workers only read the files and the
            training step decodes the batch with nvJPEG on the GPU (non-JPEG files on the CPU);
            for fast GPUs fed by few CPU cores. Without a CUDA device it falls back to decoding on
            the CPU in the training process, with one warning.
        file_list_cache: where the folder source's file lists are cached (written once by
            ``prepare_data``, read by every process, and reused while no folder under the split,
            nested ones included, has changed): ``auto`` (``root`` when writable, else
            ``~/.cache/selfsup/file_lists``), a folder, or None to scan in every process.
        classes: keep only these classes (class-folder names for ``folder``; the names in
            ``classes`` of ``digits`` ("0".."9"), ``cifar10``, ``cifar100`` and ``stl10``) in both
            splits, labelled ``0..len(classes)-1`` in the order given; e.g. two disjoint halves of
            a data set's classes for continual pretraining. ``train_subset`` / ``val_subset`` then
            sample from the kept images; unlabelled images (STL-10's) are dropped. None: every class.
            An unknown name is a ``ValueError`` listing the data's classes.
    """

    def __init__(
        self,
        source: Source = "digits",
        root: str | None = None,
        image_size: int = 32,
        batch_size: int = 256,
        num_workers: int = 4,
        download: bool = False,
        skip_corrupt: bool = False,
        train_subset: int | None = None,
        val_subset: int | None = None,
        subset_seed: int = 0,
        stl10_unlabeled: bool = True,
        pin_memory: bool = True,
        seed: int = 0,
        decode: Decode = "cpu",
        file_list_cache: str | None = "auto",
        classes: list[str] | None = None,
    ) -> None:
        super().__init__()
        if source not in ("digits", "folder", "streaming", *TORCHVISION_SOURCES):
            raise ValueError(
                f"unknown data source {source!r}; choose digits, folder, cifar10, cifar100, stl10 or streaming."
            )
        if source == "streaming" and (train_subset or val_subset):
            raise ValueError(
                "train_subset / val_subset do not apply to streaming data: optimise a smaller folder."
            )
        if source != "digits" and not root:
            raise ValueError(f"data.source={source!r} needs data.root (the folder holding the data).")
        if decode not in ("cpu", "gpu"):
            raise ValueError(f"decode must be 'cpu' or 'gpu', got {decode!r}.")
        if decode == "gpu" and source != "folder":
            raise ValueError(
                f"decode: gpu applies to the folder source (image files); {source!r} data is decoded already."
            )
        if decode == "gpu" and skip_corrupt:
            raise ValueError(
                "skip_corrupt needs decode: cpu (with decode: gpu the files are decoded in the training step, "
                "where a batch cannot shrink); check the folder once with decode: cpu and skip_corrupt: true."
            )
        if classes is not None:
            if source == "streaming":
                raise ValueError(
                    "classes does not apply to streaming data: optimise a folder of those classes instead."
                )
            if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
                raise ValueError(f"classes must be a list of class names (strings), got {classes!r}.")
            if not classes or len(set(classes)) != len(classes):
                raise ValueError(f"classes must name at least one class, each once, got {list(classes)}.")
        if image_size < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"image_size and batch_size must be >= 1 and num_workers >= 0, got {image_size}, {batch_size}, "
                f"{num_workers}."
            )
        self.source = source
        self.root = root
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.download = download
        self.skip_corrupt = skip_corrupt
        self.train_subset = train_subset
        self.val_subset = val_subset
        self.subset_seed = subset_seed
        self.stl10_unlabeled = stl10_unlabeled
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.seed = seed
        self.decode = decode
        self.file_list_cache = file_list_cache
        self.class_subset = list(classes) if classes is not None else None
        self._all_classes: list[str] = []  # every class of the data (the training split's), before `classes`
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.classes: list[str] = []
        self.save_hyperparameters()
        if root and "://" not in str(root):
            # a checkpoint stores these (``datamodule_hyper_parameters``): the data's absolute path
            # finds it wherever the checkpoint is read from (``selfsup probe``, exports)
            self.hparams["root"] = os.path.abspath(root)

    # --- Lightning hooks -------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """On one process per node: downloads (only with ``download=True``), and the folder source's
        file lists, scanned once and cached for ``setup`` on every process."""
        if self.download and self.source in TORCHVISION_SOURCES:
            download_torchvision(self.source, self.root)
        cache_dir = self._cache_dir()
        if self.source == "folder" and cache_dir is not None:
            train_dir = find_split_dir(self.root, "train")
            if train_dir is not None:
                classes, _ = cached_scan(train_dir, None, cache_dir)
                val_dir = find_split_dir(self.root, "val")
                if val_dir is not None:
                    cached_scan(val_dir, classes, cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._subset(self.build_split("train"), self.train_subset)
            self.val_set = self._subset(self.build_split("val"), self.val_subset)

    def train_dataloader(self) -> DataLoader:
        """Shuffled per epoch with a seed of its own (``seed_everything``'s), sharded across processes,
        resumable mid-epoch (see ``selfsup.data.resumable``). Incomplete last batches are dropped, so
        every batch, on every process, has the same size."""
        self.setup()
        trainer = self.trainer
        replicas = trainer.world_size if trainer is not None else 1
        if self.source == "streaming":
            self._warn_if_batch_exceeds_data(read_manifest(self.root)["splits"]["train"], replicas)
            return self._streaming_loader(self.train_set, drop_last=True)
        self._warn_if_batch_exceeds_data(len(self.train_set), replicas)
        sampler = ResumableSampler(
            self.train_set,
            num_replicas=replicas,
            rank=trainer.global_rank if trainer is not None else 0,
            shuffle=True,
            seed=self.seed,
        )

        return ResumableDataLoader(
            self.train_set,
            sampler,
            functools.partial(batches_done_in_epoch, trainer),
            batch_size=self.batch_size,
            drop_last=len(self.train_set) // sampler.num_replicas >= self.batch_size,
            num_workers=self.loader_workers(),
            pin_memory=self.pin_memory,
            persistent_workers=self.loader_workers() > 0,
            collate_fn=encoded_collate if self.decode == "gpu" else None,
        )

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if self.val_set is None:
            return []
        if self.source == "streaming":
            return self._streaming_loader(self.val_set, drop_last=False)
        return self._loader(self.val_set, shuffle=False)

    def eval_dataloader(
        self, split: Split, batch_size: int | None = None, max_samples: int | None = None
    ) -> DataLoader:
        """Unshuffled, complete (no dropped batch) loader of a split, for feature extraction;
        ``max_samples`` takes a fixed random subset of the split."""
        self.setup()
        dataset = self.train_set if split == "train" else self.val_set
        if dataset is None:
            raise ValueError(
                f"the {self.source} data at '{self.root}' has no held-out split. Expected layout: {LAYOUT}."
            )
        if self.source == "streaming":
            return self._streaming_loader(dataset, drop_last=False, batch_size=batch_size)
        return self._loader(
            self._subset(decoded_on_cpu(dataset), max_samples),
            shuffle=False,
            batch_size=batch_size,
            encoded=False,
        )

    # --- helpers ---------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.classes)

    def build_split(self, split: Split) -> Dataset | None:
        """The whole ``split`` (no subset), or None when the source has no such split."""
        dataset = open_split(
            self.source,
            self.root,
            split,
            self.image_size,
            seed=self.seed,
            classes=self._all_classes or None,
            skip_corrupt=self.skip_corrupt,
            decode=self.decode,
            cache_dir=self._cache_dir(),
            stl10_unlabeled=self.stl10_unlabeled,
        )
        if dataset is None:
            return None
        if self.source == "streaming":
            if split == "train":
                self.classes = list(read_manifest(self.root)["classes"])
            return dataset
        if split == "train":
            self._all_classes = list(dataset.classes)
            self.classes = list(dataset.classes)
        if self.class_subset is not None:
            every = self._all_classes or list(dataset.classes)
            dataset = keep_classes(dataset, every, self.class_subset, f"{self.source} data")
            self.classes = list(self.class_subset)
        return dataset

    def _warn_if_batch_exceeds_data(self, images: int, replicas: int) -> None:
        """One warning where ``batch_size`` exceeds the training images each process gets: the run
        would train on one short batch per epoch (none with streaming data, which drops incomplete
        batches), with a learning rate scaled for the batch size it never sees."""
        per_process = images // replicas
        if per_process >= self.batch_size:
            return
        where = f"{images} training images"
        if replicas > 1:
            where += f" ({per_process} per process over {replicas} processes)"
        epoch = (
            "no full batch, so nothing trains (streaming data drops incomplete batches)"
            if self.source == "streaming"
            else f"a single batch of {per_process} images per process"
        )
        rank_zero_warn(  # the same on every process: said once
            f"data.batch_size ({self.batch_size}) is larger than the {where}: every epoch is {epoch}, and "
            f"the learning rate is scaled for batches of {self.batch_size}. Set data.batch_size to at most "
            f"{max(per_process, 1)}, or train on more images.",
            stacklevel=3,
        )

    def _subset(self, dataset: Dataset | None, count: int | None) -> Dataset | None:
        if dataset is None or count is None or count >= len(dataset):
            return dataset
        generator = torch.Generator().manual_seed(self.subset_seed)
        indices = torch.randperm(len(dataset), generator=generator)[:count].sort().values.tolist()
        return Subset(dataset, indices)

    def _cache_dir(self) -> Path | None:
        if self.source != "folder" or self.file_list_cache is None or not Path(self.root).is_dir():
            return None
        return default_cache_dir(self.root) if self.file_list_cache == "auto" else Path(self.file_list_cache)

    def loader_workers(self) -> int:
        """``num_workers``, at most the CPU cores this process may use: more decoding processes
        than cores only contend for them (and torch warns about each loader). Said once."""
        cores = available_cores()
        if self.num_workers <= cores:
            return self.num_workers
        if not getattr(self, "_said_workers", False):
            self._said_workers = True
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(
                f"data.num_workers is {self.num_workers} but this process may use {cores} CPU cores: "
                f"decoding with {cores} DataLoader workers."
            )
        return cores

    def _streaming_loader(self, dataset, drop_last: bool, batch_size: int | None = None):
        from litdata import StreamingDataLoader

        return StreamingDataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            num_workers=self.loader_workers(),
            drop_last=drop_last,
            pin_memory=self.pin_memory,
            persistent_workers=self.loader_workers() > 0,
        )

    def _loader(
        self,
        dataset: Dataset,
        shuffle: bool,
        drop_last: bool = False,
        batch_size: int | None = None,
        encoded: bool | None = None,
    ) -> DataLoader:
        encoded = self.decode == "gpu" if encoded is None else encoded
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.loader_workers(),
            pin_memory=self.pin_memory,
            persistent_workers=self.loader_workers() > 0,
            collate_fn=encoded_collate if encoded else None,
        )


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, as torch's DataLoader counts them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
