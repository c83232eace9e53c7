"""Data: decode + resize on the CPU into uint8 batches (or, with ``decode: gpu``, encoded files that
the training step decodes with nvJPEG); downloads only in ``prepare_data``."""

from selfsup.data.arrays import ArrayDataset, digits_split, torchvision_split
from selfsup.data.datamodule import ImageDataModule
from selfsup.data.decode import decode_batch
from selfsup.data.folder import ImageFolderDataset, cached_scan, scan_folder
from selfsup.data.images import ImageDecodeError, decode_bytes, load_image, resize_center_crop
from selfsup.data.segmentation import SegmentationDataModule, SegmentationFolder

__all__ = [
    "ArrayDataset",
    "ImageDataModule",
    "ImageDecodeError",
    "ImageFolderDataset",
    "SegmentationDataModule",
    "SegmentationFolder",
    "cached_scan",
    "decode_batch",
    "decode_bytes",
    "digits_split",
    "load_image",
    "resize_center_crop",
    "scan_folder",
    "torchvision_split",
]
