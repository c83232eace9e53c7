"""``ImageTextDataModule``: uint8 image batches with tokenised captions, for :class:`selfsup.CLIP`."""

from __future__ import annotations

import functools
import glob
import os
from pathlib import Path
from typing import Literal

from torch.utils.data import DataLoader, Dataset

from selfsup._lightning import batches_done_in_epoch
from selfsup.data.captions import (
    DEFAULT_TEMPLATES,
    DIGIT_NAMES,
    DIGIT_TEMPLATES,
    PairFile,
    TemplateCaptions,
    TokenizeCollate,
    webdataset_pairs,
)
from selfsup.data.datamodule import ImageDataModule
from selfsup.data.resumable import ResumableDataLoader, ResumableSampler

TextSource = Literal["digits", "folder", "cifar10", "cifar100", "stl10", "csv", "jsonl", "webdataset"]
PAIR_SOURCES = ("csv", "jsonl", "webdataset")


class ImageTextDataModule(ImageDataModule):
    """Training batches are ``(images, tokens)``: ``[B, 3, image_size, image_size]`` uint8 and
    ``[B, context_length]`` int64 (open_clip's tokenizer, run in the DataLoader workers).
    ``eval_dataloader`` and the validation loader give ``(images, labels)`` as
    :class:`~selfsup.ImageDataModule` does (labels ``-1`` for caption-only data), so the kNN monitor,
    ``selfsup probe`` and the zero-shot evaluation read them; ``classnames`` and ``templates`` are
    what the zero-shot classifier is built from.

    Args:
        source: captions made from class labels with ``templates``: ``digits`` (the embedded
            default: "a photo of the number seven."), ``folder`` (an ImageFolder), ``cifar10``,
            ``cifar100``, ``stl10``; or image-caption pairs: ``csv`` / ``jsonl`` (``root`` is the
            file; image paths relative to its folder) or ``webdataset`` (``root`` is a folder of
            ``.tar`` shards, a glob, or a brace pattern ``shards/{00000..00099}.tar``).
        root: the data (see ``source``); not needed for ``digits``.
        val_root: held-out pairs for the pair sources (same kind as ``root``); None: no held-out split.
        image_key, caption_key: the CSV / JSONL field names (open_clip's ``filepath`` and ``title``).
        csv_separator: the CSV's field separator.
        classnames: the class names captions and zero-shot use: a list, a text file of one name a
            line, or None (the data's class names; the digits' are the number words).
        templates: caption templates with one ``{}`` for the class name, drawn at random per
            sample (None: "a photo of the number {}." for digits, else "a photo of a {}.").
        context_length: tokens per caption (the model's); longer captions are truncated with one
            warning naming the record.
        shuffle_buffer: WebDataset's sample shuffle buffer per worker (shards are split, not shuffled).
        image_size, batch_size, num_workers, download, train_subset, val_subset, subset_seed,
        pin_memory, seed, classes: as in :class:`~selfsup.ImageDataModule` (subsets and
        ``classes`` apply to the labelled sources).

    WebDataset: each process reads every ``world``-th shard and each of its workers every
    ``num_workers``-th of those, so no sample is read twice in an epoch; an epoch ends when a
    process's shards end, so give every process the same number of equally sized shards (DDP waits
    for the slowest). Resuming mid-epoch restarts that epoch from its first shard (WebDataset keeps
    no position); the other sources resume mid-epoch exactly, as ``ImageDataModule`` does.
    """

    def __init__(
        self,
        source: TextSource = "digits",
        root: str | None = None,
        val_root: str | None = None,
        image_key: str = "filepath",
        caption_key: str = "title",
        csv_separator: str = ",",
        classnames: list[str] | str | None = None,
        templates: list[str] | None = None,
        context_length: int = 77,
        shuffle_buffer: int = 1000,
        image_size: int = 32,
        batch_size: int = 256,
        num_workers: int = 4,
        download: bool = False,
        train_subset: int | None = None,
        val_subset: int | None = None,
        subset_seed: int = 0,
        pin_memory: bool = True,
        seed: int = 0,
        classes: list[str] | None = None,
    ) -> None:
        pairs = source in PAIR_SOURCES
        if pairs and not root:
            raise ValueError(f"data.source={source!r} needs data.root (the {source} file or shards).")
        super().__init__(
            source="digits" if pairs else source,
            root=None if pairs else root,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            download=download,
            train_subset=train_subset,
            val_subset=val_subset,
            subset_seed=subset_seed,
            pin_memory=pin_memory,
            seed=seed,
            classes=classes,
        )
        if templates is not None and (not templates or any("{}" not in t for t in templates)):
            raise ValueError(
                f"templates must be a non-empty list of strings with one '{{}}' each, got {templates!r}."
            )
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}.")
        self.source, self.root, self.val_root = source, root, val_root
        self.image_key, self.caption_key, self.csv_separator = image_key, caption_key, csv_separator
        self.classnames_arg = classnames
        self.templates = list(templates or (DIGIT_TEMPLATES if source == "digits" else DEFAULT_TEMPLATES))
        self.context_length = context_length
        self.shuffle_buffer = shuffle_buffer
        self.collate = TokenizeCollate(context_length)
        self.save_hyperparameters()
        for key in ("root", "val_root"):
            value = self.hparams.get(key)
            if value and "://" not in str(value) and "{" not in str(value):
                self.hparams[key] = os.path.abspath(value)

    # --- splits --------------------------------------------------------------------------------

    @property
    def paired(self) -> bool:
        return self.source in PAIR_SOURCES

    def build_split(self, split):
        if not self.paired:
            return super().build_split(split)
        path = self.root if split == "train" else self.val_root
        if path is None:
            return None
        if self.source == "webdataset":
            return shard_urls(path)  # the shards; the pipeline is built per process in the loaders
        return PairFile(path, self.image_size, self.image_key, self.caption_key, self.csv_separator)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and self.source == "webdataset":
            self.train_set, self.val_set = self.build_split("train"), self.build_split("val")
            return
        super().setup(stage)

    @property
    def classnames(self) -> list[str]:
        """The class names of the captions and of zero-shot classification."""
        names = self.classnames_arg
        if isinstance(names, str):
            lines = Path(names).read_text(encoding="utf-8").splitlines()
            return [line.strip() for line in lines if line.strip()]
        if names is not None:
            return list(names)
        self.setup()
        if self.paired:
            raise ValueError(
                f"{self.source} data has no classes: pass data.init_args.classnames for zero-shot."
            )
        if self.source == "digits":
            return [DIGIT_NAMES[int(c)] for c in self.classes]
        return [c.replace("_", " ") for c in self.classes]

    def _captioned(self, dataset: Dataset) -> Dataset:
        if self.paired:
            return dataset
        names = self.classnames
        if len(names) != len(self.classes):
            raise ValueError(
                f"{len(names)} classnames for {len(self.classes)} classes: give one name per class."
            )
        return TemplateCaptions(dataset, names, self.templates, f"{self.source} data")

    # --- loaders -------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        """Shuffled, sharded across processes and resumable as ``ImageDataModule``'s (WebDataset:
        shards split across processes and workers); captions tokenised in the workers."""
        self.setup()
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if self.source == "webdataset":
            pipeline = webdataset_pairs(self.train_set, self.image_size, rank, world, self.shuffle_buffer)
            return DataLoader(
                pipeline,
                batch_size=self.batch_size,
                num_workers=self.loader_workers(),
                collate_fn=self.collate,
                drop_last=True,
                pin_memory=self.pin_memory,
            )
        dataset = self._captioned(self.train_set)
        self._warn_if_batch_exceeds_data(len(dataset), world)
        sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return ResumableDataLoader(
            dataset,
            sampler,
            functools.partial(batches_done_in_epoch, trainer),
            batch_size=self.batch_size,
            drop_last=len(dataset) // sampler.num_replicas >= self.batch_size,
            num_workers=self.loader_workers(),
            pin_memory=self.pin_memory,
            persistent_workers=self.loader_workers() > 0,
            collate_fn=self.collate,
        )

    def pair_dataloader(
        self, split: Literal["train", "val"] = "val", batch_size: int | None = None
    ) -> DataLoader:
        """Unshuffled ``(images, tokens)`` batches of a split, for retrieval and checks."""
        self.setup()
        dataset = self.train_set if split == "train" else self.val_set
        if dataset is None:
            raise ValueError(f"the {self.source} data has no {split} split (set data.init_args.val_root).")
        if self.source == "webdataset":
            dataset = webdataset_pairs(dataset, self.image_size)
        else:
            dataset = self._captioned(dataset)
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            num_workers=self.loader_workers(),
            collate_fn=self.collate,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.paired:
            return []  # caption-only data has no labels for the kNN monitor
        return super().val_dataloader()

    def eval_dataloader(self, split, batch_size=None, max_samples=None) -> DataLoader:
        if self.paired:
            raise ValueError(
                f"{self.source} data has no class labels to evaluate on: evaluate on a labelled source "
                "(e.g. --data.source folder)."
            )
        return super().eval_dataloader(split, batch_size, max_samples)


def shard_urls(pattern: str) -> list[str]:
    """The shards a WebDataset ``root`` names: a folder's ``*.tar``, a glob, or a brace pattern."""
    if "{" in pattern:
        import braceexpand

        return list(braceexpand.braceexpand(pattern))
    path = Path(pattern)
    urls = sorted(str(p) for p in path.glob("*.tar")) if path.is_dir() else sorted(glob.glob(pattern))
    if not urls:
        raise FileNotFoundError(
            f"no WebDataset shards at '{pattern}': give a folder of .tar files, a glob or a brace pattern."
        )
    return urls
