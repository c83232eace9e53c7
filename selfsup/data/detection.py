"""Detection data: COCO-format JSON or Pascal-VOC XML → ``(uint8 images, box targets)`` batches.

Batches are ``(images [B, 3, S, S] uint8, targets)`` where ``targets`` is torchvision's list of
``{"boxes": float32 [N, 4] (x1, y1, x2, y2) in the batch image's pixels, "labels": int64 [N]}``;
``N`` may be 0 (images without objects are kept).

**Letterboxed, not stretched**: each image is scaled so that its longer side is ``S`` (aspect ratio
kept, antialiased), placed at the top-left of an ``S x S`` canvas filled with ``pad_value``, and its
boxes are scaled by the same factors; so a box's pixel coordinates never need an offset, and the
objects keep their shapes. Augmentation (crop, flip) runs later on the device
(``selfsup.augment.boxes.DetectionAugment``).

Layouts:

- COCO: ``root/<images>/<file_name>`` and ``root/<annotations>`` (a JSON with ``images`` (``id``,
  ``file_name``, ``width``, ``height``), ``annotations`` (``image_id``, ``category_id``,
  ``bbox = [x, y, width, height]`` in pixels) and ``categories`` (``id``, ``name``)). Crowd
  annotations (``iscrowd: 1``) are skipped, as detectron2 does for training.
- VOC: ``root/Annotations/<id>.xml`` and ``root/JPEGImages/<filename>`` (one ``VOC2007``-style
  folder). VOC coordinates are 1-based inclusive pixel indices; they become continuous coordinates
  by ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (detectron2's
  ``data/datasets/pascal_voc.py`` convention).

**Splits**: COCO takes a second JSON (``val_annotations``) when given; VOC takes
``ImageSets/Main/train.txt`` and ``val.txt`` when they exist; otherwise a fixed random split holds
out ``val_fraction`` of the images (a seeded permutation of the records in file order, so every run
and every process gets the same split).

**Boxes**: a negative width or height, or a box reaching more than ``BOX_TOLERANCE`` (1 px) outside
its image, is an error naming the file and the record; boxes within the tolerance are clipped to
the image, and boxes of zero area are dropped.

**Classes**: categories sorted by their COCO id (VOC: by name, or the order of ``classes``) become
the contiguous labels ``0..num_classes-1``; ``classes`` keeps the names.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import resize

from selfsup.data.datamodule import available_cores
from selfsup.data.images import load_image

Format = Literal["coco", "voc"]

#: how far (pixels) a box may stick out of its image before it is an error (rounding in real
#: annotation files); boxes within it are clipped to the image
BOX_TOLERANCE = 1.0


class DetectionAnnotationError(ValueError):
    """A detection annotation that cannot be used; the message names the file and the record."""


@dataclass(frozen=True)
class ImageRecord:
    """One image: its file, its size according to the annotations, and its boxes (``[N, 4]`` float32
    xyxy pixels, within the image) and labels (``[N]`` int64 contiguous)."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    source: str  # "<annotation file>: image id 3 ('a.jpg')", for error messages


@dataclass(frozen=True)
class DetectionAnnotations:
    classes: list[str]
    records: list[ImageRecord]


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DetectionAnnotationError(f"{where}: {what} must be a finite number, got {value!r}.")
    return float(value)


def _check_box(box: list[float], width: int, height: int, where: str) -> list[float] | None:
    """``[x1, y1, x2, y2]`` → the box clipped to the image, None if it has zero area; raises for a
    negative side or a box outside the image."""
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        raise DetectionAnnotationError(
            f"{where}: the box has a negative {'width' if x2 < x1 else 'height'} "
            f"({x2 - x1:g} x {y2 - y1:g}). Fix the record: width and height must be >= 0."
        )
    t = BOX_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        raise DetectionAnnotationError(
            f"{where}: the box (x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g}) lies outside the "
            f"{width}x{height} image. Fix the box or the image's width/height in the record."
        )
    clipped = [
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
        min(max(x2, 0.0), width),
        min(max(y2, 0.0), height),
    ]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None
    return clipped


def _records_from_boxes(
    path: Path, width: int, height: int, boxes: list[list[float]], labels: list[int], source: str
) -> ImageRecord:
    return ImageRecord(
        path=path,
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        source=source,
    )


def read_coco(annotation_file: str | os.PathLike, images_dir: str | os.PathLike) -> DetectionAnnotations:
    """Parse and check a COCO-format JSON; every error names the file and the record.

    Raises:
        FileNotFoundError: the JSON or an image file is missing.
        DetectionAnnotationError: malformed JSON, a missing key, a box outside its image, a negative
            width or height, an unknown category id or image id.
    """
    annotation_file, images_dir = Path(annotation_file), Path(images_dir)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"COCO annotation file '{annotation_file}' does not exist.")
    try:
        data = json.loads(annotation_file.read_text())
    except json.JSONDecodeError as err:
        raise DetectionAnnotationError(
            f"{annotation_file}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}."
        ) from None
    if not isinstance(data, dict) or any(key not in data for key in ("images", "annotations", "categories")):
        raise DetectionAnnotationError(
            f"{annotation_file}: a COCO file needs the top-level keys 'images', 'annotations' and "
            f"'categories'; found {sorted(data) if isinstance(data, dict) else type(data).__name__}."
        )

    def field(record: Any, key: str, where: str) -> Any:
        if not isinstance(record, dict) or key not in record:
            raise DetectionAnnotationError(f"{where}: the record has no '{key}': {str(record)[:200]}")
        return record[key]

    categories = {}
    for i, category in enumerate(data["categories"]):
        where = f"{annotation_file}: categories[{i}]"
        categories[field(category, "id", where)] = str(field(category, "name", where))
    if not categories:
        raise DetectionAnnotationError(
            f"{annotation_file}: 'categories' is empty: detection needs at least one class."
        )
    ids = sorted(categories)
    label_of = {cid: label for label, cid in enumerate(ids)}

    images: dict[Any, dict[str, Any]] = {}
    for i, image in enumerate(data["images"]):
        where = f"{annotation_file}: images[{i}]"
        image_id = field(image, "id", where)
        if image_id in images:
            raise DetectionAnnotationError(f"{where}: image id {image_id!r} appears twice.")
        file_name = str(field(image, "file_name", where))
        width = _number(field(image, "width", where), where, "width")
        height = _number(field(image, "height", where), where, "height")
        path = images_dir / file_name
        if not path.is_file():
            raise FileNotFoundError(
                f"{where} (id {image_id!r}): the image file '{path}' does not exist. Check 'file_name' and "
                "the images folder."
            )
        images[image_id] = {
            "path": path,
            "width": int(width),
            "height": int(height),
            "boxes": [],
            "labels": [],
        }

    for i, ann in enumerate(data["annotations"]):
        where = (
            f"{annotation_file}: annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else None!r})"
        )
        image_id = field(ann, "image_id", where)
        if image_id not in images:
            raise DetectionAnnotationError(f"{where}: unknown image_id {image_id!r} (not in 'images').")
        image = images[image_id]
        where = f"{where}, image {image_id!r} ('{image['path'].name}', {image['width']}x{image['height']})"
        category = field(ann, "category_id", where)
        if category not in label_of:
            raise DetectionAnnotationError(
                f"{where}: unknown category_id {category!r}; 'categories' has ids {ids[:20]}."
            )
        if ann.get("iscrowd", 0):
            continue
        bbox = field(ann, "bbox", where)
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise DetectionAnnotationError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}.")
        x, y, w, h = (_number(v, where, "bbox") for v in bbox)
        box = _check_box([x, y, x + w, y + h], image["width"], image["height"], where)
        if box is not None:
            image["boxes"].append(box)
            image["labels"].append(label_of[category])

    records = [
        _records_from_boxes(
            image["path"],
            image["width"],
            image["height"],
            image["boxes"],
            image["labels"],
            f"{annotation_file}: image id {image_id!r} ('{image['path'].name}')",
        )
        for image_id, image in images.items()
    ]
    return DetectionAnnotations([categories[cid] for cid in ids], records)


def _voc_text(node: ET.Element, path: str, where: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise DetectionAnnotationError(f"{where}: missing <{path}>.")
    return found.text.strip()


def _voc_number(node: ET.Element, path: str, where: str) -> float:
    text = _voc_text(node, path, where)
    try:
        return float(text)
    except ValueError:
        raise DetectionAnnotationError(f"{where}: <{path}> must be a number, got {text!r}.") from None


def read_voc(
    xml_files: list[Path], images_dir: str | os.PathLike, classes: list[str] | None = None
) -> DetectionAnnotations:
    """Parse Pascal-VOC XML files (one per image). ``classes`` fixes the class list and order; by
    default it is every ``<name>`` found, sorted. Errors name the file and the object."""
    images_dir = Path(images_dir)
    parsed = []
    for xml_file in xml_files:
        try:
            root = ET.parse(xml_file).getroot()
        except ET.ParseError as err:
            raise DetectionAnnotationError(f"{xml_file}: malformed XML: {err}.") from None
        except FileNotFoundError:
            raise FileNotFoundError(f"VOC annotation file '{xml_file}' does not exist.") from None
        where = str(xml_file)
        file_name = _voc_text(root, "filename", where)
        width = int(_voc_number(root, "size/width", where))
        height = int(_voc_number(root, "size/height", where))
        objects = []
        for j, obj in enumerate(root.iter("object")):
            obj_where = f"{xml_file}: object {j}"
            name = _voc_text(obj, "name", obj_where)
            obj_where = f"{obj_where} ('{name}', image {width}x{height})"
            xmin, ymin, xmax, ymax = (
                _voc_number(obj, f"bndbox/{k}", obj_where) for k in ("xmin", "ymin", "xmax", "ymax")
            )
            objects.append((name, [xmin - 1, ymin - 1, xmax, ymax], obj_where))
        path = images_dir / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{xml_file}: the image file '{path}' does not exist. Check <filename>.")
        parsed.append((path, width, height, objects, where))
    if classes is None:
        classes = sorted({name for *_, objects, _ in parsed for name, _, _ in objects})
        if not classes:
            raise DetectionAnnotationError(
                f"no <object> in the {len(xml_files)} VOC files under '{images_dir.parent}': pass `classes` "
                "to name the classes."
            )
    label_of = {name: i for i, name in enumerate(classes)}
    records = []
    for path, width, height, objects, where in parsed:
        boxes, labels = [], []
        for name, box, obj_where in objects:
            if name not in label_of:
                raise DetectionAnnotationError(
                    f"{obj_where}: unknown class {name!r}; the classes are {classes[:20]}."
                )
            clipped = _check_box(box, width, height, obj_where)
            if clipped is not None:
                boxes.append(clipped)
                labels.append(label_of[name])
        records.append(_records_from_boxes(path, width, height, boxes, labels, where))
    return DetectionAnnotations(list(classes), records)


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
