"""Data: decode + resize on the CPU into uint8 batches (or, with ``decode: gpu``, encoded files that
the training step decodes with nvJPEG); downloads only in ``prepare_data``.

The names below load on first use, so a process that needs one light submodule (a worker of
``selfsup data optimize`` unpickling ``selfsup.data.streaming``) does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS = {
    "ArrayDataset": "selfsup.data.arrays",
    "digits_split": "selfsup.data.arrays",
    "torchvision_split": "selfsup.data.arrays",
    "ImageDataModule": "selfsup.data.datamodule",
    "decode_batch": "selfsup.data.decode",
    "ImageFolderDataset": "selfsup.data.folder",
    "cached_scan": "selfsup.data.folder",
    "scan_folder": "selfsup.data.folder",
    "ImageDecodeError": "selfsup.data.images",
    "ImageMissingError": "selfsup.data.images",
    "decode_bytes": "selfsup.data.images",
    "load_image": "selfsup.data.images",
    "resize_center_crop": "selfsup.data.images",
    "SegmentationDataModule": "selfsup.data.segmentation",
    "SegmentationFolder": "selfsup.data.segmentation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'selfsup.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from selfsup.data.arrays import ArrayDataset, digits_split, torchvision_split
    from selfsup.data.datamodule import ImageDataModule
    from selfsup.data.decode import decode_batch
    from selfsup.data.folder import ImageFolderDataset, cached_scan, scan_folder
    from selfsup.data.images import (
        ImageDecodeError,
        ImageMissingError,
        decode_bytes,
        load_image,
        resize_center_crop,
    )
    from selfsup.data.segmentation import SegmentationDataModule, SegmentationFolder
