"""Detection annotations: COCO-format JSON or Pascal-VOC XML → checked :class:`ImageRecord` lists.

Layouts:

- COCO: ``root/<images>/<file_name>`` and ``root/<annotations>`` (a JSON with ``images`` (``id``,
  ``file_name``, ``width``, ``height``), ``annotations`` (``image_id``, ``category_id``,
  ``bbox = [x, y, width, height]`` in pixels) and ``categories`` (``id``, ``name``)). Crowd
  annotations (``iscrowd: 1``) are skipped, as detectron2 does for training.
- VOC: ``root/Annotations/<id>.xml`` and ``root/JPEGImages/<filename>`` (one ``VOC2007``-style
  folder). VOC coordinates are 1-based inclusive pixel indices; they become continuous coordinates
  by ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (detectron2's
  ``data/datasets/pascal_voc.py`` convention).

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
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

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
