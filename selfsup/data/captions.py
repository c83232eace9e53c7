"""Image-caption samples for :class:`selfsup.ImageTextDataModule`: captions made from class labels
with templates, captions read from CSV / JSONL files, captions in WebDataset tar shards, and the
collate function that tokenises a batch's captions with open_clip's tokenizer.

Every sample is ``(uint8 [3, size, size] image, caption, where)``; ``where`` names the file and the
record, so that the collate's truncation warning can say which caption it cut.
"""

from __future__ import annotations

import csv
import json
import os
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from selfsup.data.images import ImageDecodeError, decode_bytes, load_image, resize_center_crop

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = ("a photo of the number {}.",)
DEFAULT_TEMPLATES = ("a photo of a {}.",)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class TemplateCaptions(Dataset):
    """A labelled image set whose captions are ``template.format(classname)``, with one of the
    ``templates`` drawn at random per sample (Python's ``random``, seeded per DataLoader worker)."""

    def __init__(
        self, images: Dataset, classnames: Sequence[str], templates: Sequence[str], name: str
    ) -> None:
        self.images, self.classnames, self.templates, self.name = (
            images,
            list(classnames),
            list(templates),
            name,
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, str]:
        image, label = self.images[index]
        template = self.templates[random.randrange(len(self.templates))]
        return image, template.format(self.classnames[label]), f"{self.name}, image {index}"


class PairFile(Dataset):
    """Image paths and captions from a CSV (open_clip's ``--csv-img-key filepath --csv-caption-key
    title`` convention) or a JSONL file. Relative image paths are read from the file's folder.

    An empty caption, or a record without the image or caption key, is a ``ValueError`` naming the
    file and the record (its line) when the file is read; a missing or unreadable image is one
    naming them when the sample is loaded.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: int,
        image_key: str = "filepath",
        caption_key: str = "title",
        separator: str = ",",
    ) -> None:
        self.path, self.size = Path(path), size
        if not self.path.is_file():
            raise FileNotFoundError(
                f"the image-caption file '{self.path}' does not exist: set data.root to a CSV or JSONL file."
            )
        self.records: list[tuple[str, str, int]] = []  # image path, caption, line
        for line, record in self._read(separator):
            missing = [k for k in (image_key, caption_key) if k not in record]
            if missing:
                raise ValueError(
                    f"{self.path}, line {line}: no {missing[0]!r} field (fields: {sorted(record)}); set "
                    "data.init_args.image_key / caption_key to the file's names."
                )
            caption = str(record[caption_key] or "").strip()
            if not caption:
                raise ValueError(
                    f"{self.path}, line {line}: the caption is empty; give every image a caption."
                )
            image = Path(str(record[image_key]))
            self.records.append(
                (str(image if image.is_absolute() else self.path.parent / image), caption, line)
            )
        if not self.records:
            raise ValueError(f"{self.path} holds no image-caption records.")

    def _read(self, separator: str) -> Iterator[tuple[int, dict]]:
        with open(self.path, encoding="utf-8", newline="") as handle:
            if self.path.suffix.lower() in (".jsonl", ".json"):
                for line, text in enumerate(handle, start=1):
                    if text.strip():
                        try:
                            yield line, json.loads(text)
                        except json.JSONDecodeError as err:
                            raise ValueError(
                                f"{self.path}, line {line}: not a JSON object ({err.msg})."
                            ) from None
            else:
                for line, record in enumerate(csv.DictReader(handle, delimiter=separator), start=2):
                    yield line, record

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, str]:
        path, caption, line = self.records[index]
        where = f"{self.path}, line {line}"
        try:
            image = load_image(path, self.size)
        except ImageDecodeError as err:
            raise ImageDecodeError(err.path, f"{err.reason}; listed at {where}", err.fix) from None
        return image, caption, where


def split_shards(urls: Sequence[str], rank: int, world: int) -> Callable:
    """A WebDataset pipeline stage keeping this process's shards: every ``world``-th from ``rank``
    (the DataLoader workers then split them again with ``webdataset.split_by_worker``)."""

    def stage(shards: Iterator[dict]) -> Iterator[dict]:
        for index, shard in enumerate(shards):
            if index % world == rank:
                yield shard

    if len(urls) < world:
        raise ValueError(
            f"{len(urls)} WebDataset shards for {world} processes: a process would get none; write at least "
            "one shard per process."
        )
    return stage


def _raise_shard_error(err: Exception) -> bool:
    url = next((a for a in err.args if isinstance(a, str) and a.endswith(".tar")), "a shard")
    raise ValueError(f"unreadable WebDataset shard '{url}': {err.args[0] if err.args else err}") from None


def webdataset_pairs(urls: Sequence[str], size: int, rank: int = 0, world: int = 1, shuffle_buffer: int = 0):
    """An iterable of ``(image, caption, where)`` from WebDataset tar shards (``<key>.jpg`` / ``.png``
    + ``<key>.txt``, img2dataset's layout): this process's shards, split again across its DataLoader
    workers, so each sample is read once per epoch over all processes and workers."""
    import webdataset as wds

    def to_pair(sample: dict) -> tuple[torch.Tensor, str, str]:
        where = f"{sample.get('__url__', 'a shard')}, record {sample.get('__key__')}"
        data = next((sample[k] for k in IMAGE_EXTENSIONS if k in sample), None)
        if data is None or "txt" not in sample:
            raise ValueError(
                f"{where}: needs an image ({'/'.join(IMAGE_EXTENSIONS)}) and a .txt caption; found {sorted(k for k in sample if not k.startswith('__'))}."
            )
        caption = sample["txt"].decode("utf-8").strip()
        if not caption:
            raise ValueError(f"{where}: the caption is empty; give every image a caption.")
        image = decode_bytes(torch.frombuffer(bytearray(data), dtype=torch.uint8), where, min_size=size)
        return resize_center_crop(image, size), caption, where

    stages = [wds.SimpleShardList(list(urls)), split_shards(urls, rank, world), wds.split_by_worker]
    stages.append(wds.tarfile_to_samples(handler=_raise_shard_error))
    if shuffle_buffer > 0:
        stages.append(wds.shuffle(shuffle_buffer))
    stages.append(wds.map(to_pair))
    return wds.DataPipeline(*stages)


class TokenizeCollate:
    """Stack a batch's images and tokenise its captions with open_clip's tokenizer (BPE, shipped in
    its wheel: offline) into ``[B, context_length]`` int64. A caption longer than the context length
    is truncated (its last token becomes the end-of-text token) with one warning per process naming
    it. Returns ``(images, tokens)``."""

    def __init__(self, context_length: int = 77) -> None:
        from open_clip import SimpleTokenizer

        self.context_length = context_length
        self.tokenizer = SimpleTokenizer(context_length=context_length + 1)
        self.warned = False

    def __call__(self, batch: Sequence[tuple[torch.Tensor, str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([b[0] for b in batch])
        tokens = self.tokenizer([b[1] for b in batch])  # one spare column: non-zero means too long
        too_long = tokens[:, -1] != 0
        tokens = tokens[:, :-1].contiguous()
        if too_long.any():
            tokens[too_long, -1] = self.tokenizer.eot_token_id
            if not self.warned:
                self.warned = True
                first = int(too_long.nonzero()[0, 0])
                warnings.warn(
                    f"a caption is longer than the context length ({self.context_length} tokens) and was "
                    f"truncated ({batch[first][2]}: {batch[first][1][:60]!r}...); raise context_length (model "
                    "and data) to keep long captions. Said once.",
                    UserWarning,
                    stacklevel=2,
                )
        return images, tokens
