"""A small detection set made from real images, offline: objects pasted onto canvases, as COCO JSON.

For tests and quick demos of detection fine-tuning without downloading COCO: each canvas gets a few
objects (CIFAR-10 images from an ImageFolder, or scikit-learn's 8x8 handwritten digits) at random
positions and sizes, not overlapping, on a noise or plain background; their boxes and classes are
written as ``root/annotations.json`` beside ``root/images/*.png``, ready for
``selfsup.data.detection.DetectionDataModule(root)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import resize

from selfsup.data.images import IMAGE_EXTENSIONS, load_image

Source = Literal["cifar10", "digits"]
Background = Literal["noise", "plain"]


def _digit_objects(classes: list[str] | None) -> tuple[list[str], list[tuple[np.ndarray, int]]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    names = [str(d) for d in range(10)] if classes is None else list(classes)
    unknown = [c for c in names if c not in {str(d) for d in range(10)}]
    if unknown:
        raise ValueError(f"digits classes are '0'..'9', got {unknown}.")
    wanted = {int(c): i for i, c in enumerate(names)}
    pool = [
        (img, wanted[int(t)]) for img, t in zip(digits.images, digits.target, strict=True) if int(t) in wanted
    ]
    return names, pool


def _folder_objects(folder: Path, classes: list[str] | None) -> tuple[list[str], list[tuple[str, int]]]:
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder '{folder}' does not exist (expected folder/<class>/<image>).")
    found = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    names = found if classes is None else list(classes)
    unknown = [c for c in names if c not in found]
    if unknown or not names:
        raise ValueError(f"'{folder}' has no class folders {unknown or ''}; it has {found}.")
    pool = []
    for label, name in enumerate(names):  # list only the classes used: CIFAR-10 has 5,000 per class
        files = sorted(f for f in os.listdir(folder / name) if f.lower().endswith(IMAGE_EXTENSIONS))
        pool.extend((str(folder / name / f), label) for f in files)
    return names, pool


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 < b[2] and b[0] < x2 and y1 < b[3] and b[1] < y2 for b in placed)


def make_detection_set(
    root: str | os.PathLike,
    n_images: int,
    canvas: int = 64,
    source: Source = "digits",
    folder: str | os.PathLike | None = None,
    classes: list[str] | None = None,
    objects_per_image: tuple[int, int] = (1, 3),
    object_size: tuple[float, float] = (0.25, 0.5),
    background: Background = "noise",
    seed: int = 0,
) -> Path:
    """Write ``root/images/<i>.png`` and ``root/annotations.json`` (COCO format); returns ``root``.

    Args:
        root: output folder (created).
        n_images: canvases to write.
        canvas: canvas side in pixels.
        source: ``"cifar10"`` (images of ``folder``, an ImageFolder such as CIFAR-10's ``train``; the
            box is the whole pasted image) or ``"digits"`` (scikit-learn's digits, blended in a random
            bright colour; the box is the tight extent of the stroke).
        folder: the ImageFolder for ``source="cifar10"``.
        classes: class names to use (default all: the ten CIFAR-10 folders or the digits ``"0"``..``"9"``).
            COCO category ids are 1..K in this order.
        objects_per_image: inclusive range of objects per canvas (0 allowed: images without boxes).
        object_size: side of a pasted object as a fraction of ``canvas`` (uniform in the range).
        background: ``"noise"`` (uniform RGB noise) or ``"plain"`` (one random colour per canvas).
        seed: everything is drawn from it.
    """
    if n_images < 1 or canvas < 8:
        raise ValueError(f"n_images must be >= 1 and canvas >= 8, got {n_images} and {canvas}.")
    if not 0 <= objects_per_image[0] <= objects_per_image[1]:
        raise ValueError(f"objects_per_image must be 0 <= low <= high, got {objects_per_image}.")
    if not 0.0 < object_size[0] <= object_size[1] <= 1.0:
        raise ValueError(f"object_size must satisfy 0 < low <= high <= 1, got {object_size}.")
    if background not in ("noise", "plain"):
        raise ValueError(f"background must be 'noise' or 'plain', got {background!r}.")
    if source == "cifar10":
        if folder is None:
            raise ValueError("source='cifar10' needs folder: an ImageFolder such as cifar10/train.")
        names, pool = _folder_objects(Path(folder), classes)
    elif source == "digits":
        names, pool = _digit_objects(classes)
    else:
        raise ValueError(f"source must be 'cifar10' or 'digits', got {source!r}.")
    if not pool:
        raise ValueError("no object images for the chosen classes.")
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(n_images):
        if background == "noise":
            image = rng.integers(0, 256, (canvas, canvas, 3), dtype=np.uint8)
        else:
            image = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (canvas, canvas, 3)).copy()
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))):
            side = int(round(canvas * rng.uniform(*object_size)))
            for _try in range(20):
                x, y = (int(v) for v in rng.integers(0, canvas - side + 1, 2))
                if not _overlaps((x, y, x + side, y + side), placed):
                    break
            else:
                continue
            item, label = pool[int(rng.integers(len(pool)))]
            if source == "cifar10":
                patch = resize(load_image(item), [side, side], antialias=True).permute(1, 2, 0).numpy()
                image[y : y + side, x : x + side] = patch
                box = (x, y, side, side)
            else:
                alpha = resize(torch.from_numpy(item / 16.0)[None].float(), [side, side], antialias=True)[
                    0
                ].numpy()
                alpha = alpha.clip(0, 1)[..., None]
                colour = rng.integers(160, 256, 3)
                region = image[y : y + side, x : x + side].astype(np.float64)
                image[y : y + side, x : x + side] = (
                    (alpha * colour + (1 - alpha) * region).round().astype(np.uint8)
                )
                rows, cols = np.nonzero(alpha[..., 0] > 0.25)
                if rows.size == 0:
                    continue
                box = (
                    x + int(cols.min()),
                    y + int(rows.min()),
                    int(cols.max() - cols.min() + 1),
                    int(rows.max() - rows.min() + 1),
                )
            placed.append((x, y, x + side, y + side))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": label + 1,
                    "bbox": list(box),
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
        file_name = f"{index:05d}.png"
        Image.fromarray(image).save(root / "images" / file_name)
        images.append({"id": index, "file_name": file_name, "width": canvas, "height": canvas})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return root
