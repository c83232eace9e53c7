"""Detection data: COCO-format JSON or Pascal-VOC XML → ``(uint8 images, box targets)`` batches.

Batches are ``(images [B, 3, S, S] uint8, targets)`` where ``targets`` is torchvision's list of
``{"boxes": float32 [N, 4] (x1, y1, x2, y2) in the batch image's pixels, "labels": int64 [N]}``;
``N`` may be 0 (images without objects are kept).

**Letterboxed, not stretched**: each image is scaled so that its longer side is ``S`` (aspect ratio
kept, antialiased), placed at the top-left of an ``S x S`` canvas filled with ``pad_value``, and its
boxes are scaled by the same factors; so a box's pixel coordinates never need an offset, and the
objects keep their shapes. Augmentation (crop, flip) runs later on the device
(``selfsup.augment.boxes.DetectionAugment``).

Layouts (COCO, VOC), box checks and class labels: see ``selfsup.data.detection_annotations``.

**Splits**: COCO takes a second JSON (``val_annotations``) when given; VOC takes
``ImageSets/Main/train.txt`` and ``val.txt`` when they exist; otherwise a fixed random split holds
out ``val_fraction`` of the images (a seeded permutation of the records in file order, so every run
and every process gets the same split).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import resize

from selfsup.data.datamodule import available_cores
from selfsup.data.detection_annotations import (
    BOX_TOLERANCE,
    DetectionAnnotationError,
    DetectionAnnotations,
    Format,
    ImageRecord,
    read_coco,
    read_voc,
)
from selfsup.data.images import load_image

__all__ = [
    "BOX_TOLERANCE",
    "DetectionAnnotationError",
    "DetectionAnnotations",
    "DetectionDataModule",
    "DetectionDataset",
    "Format",
    "ImageRecord",
    "detection_collate",
    "letterbox",
    "read_coco",
    "read_voc",
]


def letterbox(
    image: torch.Tensor, boxes: torch.Tensor, size: int, pad_value: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[3, H, W]`` uint8 and ``[N, 4]`` xyxy boxes → ``[3, size, size]`` with the image scaled so
    its longer side is ``size`` at the top-left, the rest ``pad_value``, and the boxes scaled alike."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        image = resize(image, [new_h, new_w], antialias=True)
    canvas = torch.full((image.shape[0], size, size), pad_value, dtype=torch.uint8)
    canvas[:, :new_h, :new_w] = image
    factors = torch.tensor(
        [new_w / width, new_h / height, new_w / width, new_h / height], dtype=torch.float32
    )
    return canvas, boxes * factors


class DetectionDataset(Dataset):
    """``(uint8 [3, size, size], {"boxes", "labels"})`` for each record, letterboxed.

    Raises:
        DetectionAnnotationError: the decoded image's size differs from its record's width/height
            (the boxes would then be wrong).
        ImageDecodeError: the image cannot be decoded.
    """

    def __init__(self, records: list[ImageRecord], size: int, pad_value: int = 114) -> None:
        self.records = records
        self.size = size
        self.pad_value = pad_value

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.records[index]
        image = load_image(record.path)
        if tuple(image.shape[-2:]) != (record.height, record.width):
            raise DetectionAnnotationError(
                f"{record.source}: the record says {record.width}x{record.height} but '{record.path}' is "
                f"{image.shape[-1]}x{image.shape[-2]}. Fix the width/height in the annotations."
            )
        image, boxes = letterbox(image, torch.from_numpy(record.boxes), self.size, self.pad_value)
        return image, {"boxes": boxes, "labels": torch.from_numpy(record.labels)}


def detection_collate(
    batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Stack the images, keep the targets as a list (their box counts differ)."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


def _random_split(records: list[ImageRecord], val_fraction: float, seed: int) -> tuple[list, list]:
    if val_fraction == 0 or len(records) < 2:
        return records, []
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(len(records) - 1, max(1, round(len(records) * val_fraction)))
    val = set(order[:n_val])
    return [r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val]


class DetectionDataModule(L.LightningDataModule):
    """Detection batches ``(uint8 [B, 3, S, S], [{"boxes": [N, 4], "labels": [N]}])`` from COCO or VOC
    annotations (see the module docstring for the layouts, the letterbox and the split).

    Args:
        root: the data folder.
        annotations: COCO: the JSON, relative to ``root`` (default ``annotations.json``); VOC: the XML
            folder (default ``Annotations``).
        format: ``"coco"`` or ``"voc"``.
        images: the images folder relative to ``root`` (default ``images``; VOC ``JPEGImages``).
        val_annotations: COCO only: a JSON of the held-out images (its images in ``val_images``, by
            default the same folder). None: a random split of ``annotations``.
        val_images: COCO only: the images folder of ``val_annotations``.
        val_fraction: the share of images held out by the random split (0: no validation set).
        split_seed: seed of the random split.
        classes: VOC only: the class names in label order (default: the names found, sorted).
        image_size: side ``S`` of the letterboxed square images.
        batch_size: images per batch.
        num_workers: DataLoader workers.
        pad_value: grey level of the letterbox padding (114: near the ImageNet mean, as YOLO pads).
    """

    def __init__(
        self,
        root: str,
        annotations: str | None = None,
        format: Format = "coco",
        images: str | None = None,
        val_annotations: str | None = None,
        val_images: str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        classes: list[str] | None = None,
        image_size: int = 64,
        batch_size: int = 8,
        num_workers: int = 2,
        pad_value: int = 114,
    ) -> None:
        super().__init__()
        if format not in ("coco", "voc"):
            raise ValueError(f"format must be 'coco' or 'voc', got {format!r}.")
        if not Path(root).is_dir():
            raise FileNotFoundError(f"Data root '{root}' does not exist.")
        if format == "voc" and (val_annotations or val_images):
            raise ValueError(
                "val_annotations / val_images are COCO options; VOC splits use ImageSets/Main/{train,val}.txt."
            )
        if format == "coco" and classes is not None:
            raise ValueError("classes is a VOC option; COCO files name their classes in 'categories'.")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}.")
        if image_size < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"image_size and batch_size must be >= 1 and num_workers >= 0, got {image_size}, {batch_size}, {num_workers}."
            )
        if not 0 <= pad_value <= 255:
            raise ValueError(f"pad_value must lie in [0, 255], got {pad_value}.")
        self.root = Path(root)
        self.format = format
        self.annotations = annotations or ("annotations.json" if format == "coco" else "Annotations")
        self.images = images or ("images" if format == "coco" else "JPEGImages")
        self.val_annotations = val_annotations
        self.val_images = val_images
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.class_names = classes
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pad_value = pad_value
        self.train_set: DetectionDataset | None = None
        self.val_set: DetectionDataset | None = None
        self._classes: list[str] | None = None

    @property
    def classes(self) -> list[str]:
        """Class names in label order (reads the annotations on first use)."""
        self.setup()
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _read_coco(self) -> tuple[list[str], list[ImageRecord], list[ImageRecord]]:
        train = read_coco(self.root / self.annotations, self.root / self.images)
        if self.val_annotations is None:
            return train.classes, *_random_split(train.records, self.val_fraction, self.split_seed)
        val = read_coco(self.root / self.val_annotations, self.root / (self.val_images or self.images))
        if val.classes != train.classes:
            raise DetectionAnnotationError(
                f"{self.root / self.val_annotations}: its categories {val.classes[:10]} differ from those of "
                f"{self.root / self.annotations} ({train.classes[:10]}); both files need the same categories."
            )
        return train.classes, train.records, val.records

    def _read_voc(self) -> tuple[list[str], list[ImageRecord], list[ImageRecord]]:
        xml_dir, images_dir = self.root / self.annotations, self.root / self.images
        if not xml_dir.is_dir():
            raise FileNotFoundError(
                f"VOC annotation folder '{xml_dir}' does not exist (expected root/Annotations/*.xml)."
            )
        lists = self.root / "ImageSets" / "Main"
        if (lists / "train.txt").is_file() and (lists / "val.txt").is_file():
            ids = {split: (lists / f"{split}.txt").read_text().split() for split in ("train", "val")}
            parsed = read_voc(
                [xml_dir / f"{i}.xml" for i in ids["train"] + ids["val"]], images_dir, self.class_names
            )
            n_train = len(ids["train"])
            return parsed.classes, parsed.records[:n_train], parsed.records[n_train:]
        files = sorted(xml_dir.glob("*.xml"))
        if not files:
            raise FileNotFoundError(f"'{xml_dir}' contains no .xml annotation files.")
        parsed = read_voc(files, images_dir, self.class_names)
        return parsed.classes, *_random_split(parsed.records, self.val_fraction, self.split_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        classes, train, val = self._read_coco() if self.format == "coco" else self._read_voc()
        if not train:
            raise DetectionAnnotationError(f"'{self.root}': the training split has no images.")
        empty = sum(len(r.labels) == 0 for r in train)
        if empty == len(train):
            warnings.warn(f"'{self.root}': no training image has a box.", stacklevel=2)
        self._classes = classes
        self.train_set = DetectionDataset(train, self.image_size, self.pad_value)
        self.val_set = DetectionDataset(val, self.image_size, self.pad_value) if val else None

    def _loader(
        self, dataset: Dataset, shuffle: bool, drop_last: bool = False, batch_size: int | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=min(self.num_workers, available_cores()),
            persistent_workers=self.num_workers > 0,
            collate_fn=detection_collate,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, True, drop_last=len(self.train_set) >= self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        return [] if self.val_set is None else self._loader(self.val_set, False)
