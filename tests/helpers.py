"""Shared test helpers: the shared data location and tiny image folders written by tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """``../shared/data/<name>``; skips the test with a reason where it is absent (a fresh clone),
    but fails under ``CI=true``: CI must never skip a learning check silently."""
    path = SHARED_DATA / name
    if not path.is_dir():
        message = (
            f"this test needs the data set at {path} (the shared CIFAR-10 ImageFolder beside the repository)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {message} is missing.")
        pytest.skip(message)
    return path


def write_image_folder(
    root: Path,
    classes=("cat", "dog"),
    per_class: int = 4,
    size: int = 20,
    splits=("train", "val"),
    seed: int = 0,
) -> Path:
    """``root/<split>/<class>/<i>.png|jpg`` with random RGB images of ``size`` px."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
                arr[..., c % 3] = 255 if c else 0  # classes differ in one channel
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(arr).save(folder / f"{i}.{ext}")
    return root
