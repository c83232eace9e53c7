"""The pasted-objects detection set: its boxes hold the objects, and it reads back as COCO."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from selfsup.data.detection import read_coco
from selfsup.data.synthetic_detection import make_detection_set
from tests.helpers import shared_data


def _canvases(root):
    data = json.loads((root / "annotations.json").read_text())
    boxes = {image["id"]: [] for image in data["images"]}
    for ann in data["annotations"]:
        boxes[ann["image_id"]].append(ann["bbox"])
    for image in data["images"]:
        yield np.asarray(Image.open(root / "images" / image["file_name"])), boxes[image["id"]]


def _background(image):
    """The plain background: the most frequent colour."""
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    return colours[counts.argmax()].astype(int)


def _inside(shape, boxes):
    inside = np.zeros(shape[:2], bool)
    for x, y, w, h in boxes:
        inside[y : y + h, x : x + w] = True
    return inside


def test_digits_set_boxes_hold_the_strokes_and_read_back(tmp_path):
    root = make_detection_set(
        tmp_path, 12, canvas=48, source="digits", classes=["3", "7"], background="plain", seed=1
    )
    parsed = read_coco(root / "annotations.json", root / "images")
    assert parsed.classes == ["3", "7"] and len(parsed.records) == 12
    assert sum(len(r.labels) for r in parsed.records) >= 12 and {0, 1} <= {
        int(label) for r in parsed.records for label in r.labels
    }
    for image, boxes in _canvases(root):
        background = _background(image)
        strong = np.abs(image.astype(int) - background).max(-1) > 100  # opaque stroke pixels
        assert not (strong & ~_inside(image.shape, boxes)).any()
        for x, y, w, h in boxes:  # tight: every box edge touches a stroke
            part = np.abs(image[y : y + h, x : x + w].astype(int) - background).max(-1) > 20
            assert part[0].any() and part[-1].any() and part[:, 0].any() and part[:, -1].any()
    again = make_detection_set(
        tmp_path / "again", 12, canvas=48, source="digits", classes=["3", "7"], background="plain", seed=1
    )
    assert (again / "annotations.json").read_text() == (root / "annotations.json").read_text()


def test_cifar_set_pastes_whole_images_without_overlap(tmp_path):
    folder = shared_data("cifar10") / "train"
    root = make_detection_set(
        tmp_path,
        8,
        canvas=64,
        source="cifar10",
        folder=folder,
        classes=["cat", "ship"],
        background="plain",
        objects_per_image=(0, 3),
    )
    counts = []
    for image, boxes in _canvases(root):
        counts.append(len(boxes))
        inside = _inside(image.shape, boxes)
        assert inside.sum() == sum(w * h for _, _, w, h in boxes)  # no two boxes overlap
        assert (image[~inside] == _background(image)).all()  # outside the boxes: background only
    assert min(counts) >= 0 and max(counts) <= 3 and sum(counts) > 0


def test_bad_arguments_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="needs folder"):
        make_detection_set(tmp_path, 2, source="cifar10")
    with pytest.raises(ValueError, match="digits classes"):
        make_detection_set(tmp_path, 2, classes=["cat"])
    with pytest.raises(ValueError, match="object_size"):
        make_detection_set(tmp_path, 2, object_size=(0.5, 2.0))
