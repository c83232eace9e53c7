"""COCO and VOC detection data: reading, letterboxing, splits, and a clear error for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data.detection import DetectionAnnotationError, DetectionDataModule, detection_collate, read_coco

VOC_OBJECT = "<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"


def write_coco(
    root: Path, annotations=None, images=None, categories=None, sizes=((40, 20), (30, 30), (16, 16))
) -> Path:
    """Three images (40x20, 30x30, 16x16; the last without boxes), categories 3 'cat' and 7 'dog'."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 10 * i, dtype=np.uint8)).save(root / "images" / f"{i}.png")
    data = {
        "images": images
        or [
            {"id": 10 + i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in enumerate(sizes)
        ],
        "annotations": annotations
        or [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [4, 2, 20, 10]},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 40, 20]},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [5, 5, 10, 15]},
        ],
        "categories": categories or [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def test_coco_batches_are_letterboxed_with_contiguous_labels(tmp_path):
    data = DetectionDataModule(
        str(write_coco(tmp_path)), image_size=20, batch_size=3, num_workers=0, val_fraction=0
    )
    assert data.classes == ["cat", "dog"] and data.num_classes == 2  # sorted by category id: 3, 7
    assert data.val_dataloader() == []
    shuffled, listed = next(iter(data.train_dataloader()))
    assert shuffled.shape == (3, 3, 20, 20) and isinstance(listed, list) and len(listed) == 3
    images, targets = detection_collate([data.train_set[i] for i in range(3)])  # file order
    assert images.shape == (3, 3, 20, 20) and images.dtype == torch.uint8 and isinstance(targets, list)
    # 40x20 image → scale 0.5: 20x10 at the top-left, the rest is padding (114)
    assert (images[0, :, 10:] == 114).all() and (images[0, :, :10] == 0).all()
    torch.testing.assert_close(
        targets[0]["boxes"], torch.tensor([[2.0, 1.0, 12.0, 6.0], [0.0, 0.0, 20.0, 10.0]])
    )
    assert targets[0]["labels"].tolist() == [1, 0] and targets[0]["labels"].dtype == torch.int64
    torch.testing.assert_close(targets[1]["boxes"], torch.tensor([[5.0, 5.0, 15.0, 20.0]]) * 20 / 30)
    assert targets[2]["boxes"].shape == (0, 4) and targets[2]["labels"].shape == (0,)  # no boxes is fine


def test_random_split_is_fixed_and_disjoint_and_val_file_is_used(tmp_path):
    root = write_coco(tmp_path)
    a = DetectionDataModule(str(root), val_fraction=0.34, split_seed=1, num_workers=0)
    b = DetectionDataModule(str(root), val_fraction=0.34, split_seed=1, num_workers=0)
    a.setup(), b.setup()
    names = lambda ds: sorted(r.path.name for r in ds.records)  # noqa: E731
    assert names(a.train_set) == names(b.train_set) and len(a.val_set) == 1
    assert not set(names(a.train_set)) & set(names(a.val_set))
    (root / "val.json").write_text((root / "annotations.json").read_text())
    c = DetectionDataModule(str(root), val_annotations="val.json", num_workers=0)
    c.setup()
    assert len(c.train_set) == len(c.val_set) == 3


def test_voc_reads_xml_with_one_based_pixels_and_imagesets_split(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    objects = {"a": [("dog", 1, 1, 10, 20), ("bird", 5, 6, 30, 30)], "b": []}
    for name, objs in objects.items():
        Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "JPEGImages" / f"{name}.jpg")
        xml = "".join(VOC_OBJECT.format(name=n, x1=x1, y1=y1, x2=x2, y2=y2) for n, x1, y1, x2, y2 in objs)
        (tmp_path / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>30</width><height>30</height><depth>3</depth></size>{xml}</annotation>"
        )
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    data = DetectionDataModule(str(tmp_path), format="voc", image_size=30, num_workers=0)
    assert data.classes == ["bird", "dog"]
    image, target = data.train_set[0]
    assert image.shape == (3, 30, 30)
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[0.0, 0.0, 10.0, 20.0], [4.0, 5.0, 30.0, 30.0]])
    )
    assert target["labels"].tolist() == [1, 0]
    assert len(data.val_set) == 1 and len(data.val_set[0][1]["boxes"]) == 0
    fixed = DetectionDataModule(str(tmp_path), format="voc", classes=["dog", "bird", "cat"], num_workers=0)
    assert fixed.train_set is None  # nothing read before it is needed
    assert fixed.num_classes == 3
    assert fixed.classes == ["dog", "bird", "cat"] and fixed.train_set[0][1]["labels"].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (
            {"bbox": [30, 2, 20, 10]},
            r"annotations\[0\] \(id 1\), image 10 \('0.png', 40x20\).*outside the 40x20 image",
        ),
        ({"bbox": [4, 2, -5, 10]}, r"annotations\[0\] \(id 1\).*negative width"),
        ({"bbox": [4, 2, 5, -1]}, r"annotations\[0\] \(id 1\).*negative height"),
        ({"category_id": 99}, r"annotations\[0\] \(id 1\).*unknown category_id 99"),
        ({"image_id": 55}, r"annotations\[0\] \(id 1\).*unknown image_id 55"),
        ({"bbox": [1, 2, 3]}, r"annotations\[0\] \(id 1\).*bbox must be \[x, y, width, height\]"),
        ({"bbox": [1, 2, "a", 4]}, r"annotations\[0\] \(id 1\).*finite number"),
    ],
)
def test_bad_coco_annotations_name_the_file_and_record(tmp_path, annotation, message):
    record = {"id": 1, "image_id": 10, "category_id": 3, "bbox": [4, 2, 20, 10], **annotation}
    root = write_coco(tmp_path, annotations=[record])
    with pytest.raises(DetectionAnnotationError, match=message) as info:
        read_coco(root / "annotations.json", root / "images")
    assert str(root / "annotations.json") in str(info.value)


def test_missing_image_malformed_json_and_wrong_size_get_clear_errors(tmp_path):
    root = write_coco(tmp_path)
    (root / "images" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images\[1\] \(id 11\).*'.*1.png' does not exist"):
        DetectionDataModule(str(root), num_workers=0).setup()
    (root / "annotations.json").write_text('{"images": [}')
    with pytest.raises(
        DetectionAnnotationError, match=r"annotations.json: malformed JSON at line 1, column 13"
    ):
        read_coco(root / "annotations.json", root / "images")
    (root / "annotations.json").write_text('{"images": []}')
    with pytest.raises(DetectionAnnotationError, match="top-level keys"):
        read_coco(root / "annotations.json", root / "images")
    wrong = write_coco(
        tmp_path / "wrong",
        images=[{"id": 10, "file_name": "0.png", "width": 50, "height": 20}],
        annotations=[{"id": 1, "image_id": 10, "category_id": 3, "bbox": [4, 2, 20, 10]}],
    )
    data = DetectionDataModule(str(wrong), num_workers=0, val_fraction=0)
    data.setup()
    with pytest.raises(
        DetectionAnnotationError, match=r"image id 10 \('0.png'\): the record says 50x20 but .* is 40x20"
    ):
        data.train_set[0]


def test_bad_voc_files_name_the_file_and_object(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "JPEGImages" / "a.jpg")
    xml = tmp_path / "Annotations" / "a.xml"

    def write(obj: str) -> None:
        xml.write_text(
            f"<annotation><filename>a.jpg</filename><size><width>30</width><height>30</height></size>{obj}</annotation>"
        )

    cases = [
        (
            VOC_OBJECT.format(name="dog", x1=10, y1=1, x2=5, y2=9),
            r"a.xml: object 0 \('dog', image 30x30\).*negative width",
        ),
        (
            VOC_OBJECT.format(name="dog", x1=1, y1=1, x2=50, y2=9),
            r"a.xml: object 0 .*outside the 30x30 image",
        ),
        (
            VOC_OBJECT.format(name="cow", x1=1, y1=1, x2=5, y2=9),
            r"a.xml: object 0 \('cow'.*unknown class 'cow'",
        ),
        ("<object><name>dog</name></object>", r"a.xml: object 0 .*missing <bndbox/xmin>"),
    ]
    for obj, message in cases:
        write(obj)
        with pytest.raises(DetectionAnnotationError, match=message):
            DetectionDataModule(str(tmp_path), format="voc", classes=["dog"], num_workers=0).setup()
    xml.write_text("<annotation><filename>a.jpg</filename>")
    with pytest.raises(DetectionAnnotationError, match=r"a.xml: malformed XML"):
        DetectionDataModule(str(tmp_path), format="voc", num_workers=0).setup()
    xml.write_text(
        "<annotation><filename>b.jpg</filename><size><width>30</width><height>30</height></size></annotation>"
    )
    with pytest.raises(FileNotFoundError, match=r"a.xml: the image file '.*b.jpg' does not exist"):
        DetectionDataModule(str(tmp_path), format="voc", classes=["dog"], num_workers=0).setup()


def test_bad_arguments_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DetectionDataModule(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="format"):
        DetectionDataModule(str(tmp_path), format="yolo")
    with pytest.raises(ValueError, match="classes is a VOC option"):
        DetectionDataModule(str(tmp_path), classes=["a"])
    with pytest.raises(ValueError, match="val_fraction"):
        DetectionDataModule(str(tmp_path), val_fraction=1.0)
