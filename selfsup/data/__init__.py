"""Data: decode + resize on the CPU into uint8 batches; downloads only in ``prepare_data``."""

from selfsup.data.arrays import ArrayDataset, digits_split, torchvision_split
from selfsup.data.datamodule import ImageDataModule
from selfsup.data.folder import ImageFolderDataset, scan_folder
from selfsup.data.images import ImageDecodeError, load_image, resize_center_crop
from selfsup.data.segmentation import SegmentationDataModule, SegmentationFolder

__all__ = [
    "ArrayDataset",
    "ImageDataModule",
    "ImageDecodeError",
    "ImageFolderDataset",
    "SegmentationDataModule",
    "SegmentationFolder",
    "digits_split",
    "load_image",
    "resize_center_crop",
    "scan_folder",
    "torchvision_split",
]
