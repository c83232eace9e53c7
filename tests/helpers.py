"""Shared test helpers: the shared data location, tiny image folders written by tests, and a plain-timm
subprocess that loads an export without importing selfsup."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

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


PLAIN_TIMM = textwrap.dedent("""
    import sys
    import timm
    import torch
    from safetensors.torch import load_file, save_file

    export_dir, inputs, outputs = sys.argv[1:]
    model = timm.create_model(f"local-dir:{export_dir}", pretrained=True).eval()
    with torch.no_grad():
        features = model(load_file(inputs)["x"])
    save_file({"features": features.contiguous()}, outputs)
    assert not any(name == "selfsup" or name.startswith("selfsup.") for name in sys.modules), "selfsup was imported"
    print(type(model).__name__, model.global_pool, tuple(features.shape))
""")


def run_in_plain_timm(export_dir: Path, x: torch.Tensor, work: Path) -> tuple[torch.Tensor, str]:
    """Loads ``export_dir`` with ``timm.create_model("local-dir:...")`` in a fresh Python process
    that must not import selfsup, runs it on ``x``; returns its output and what it printed
    (class name, pooling, output shape)."""
    inputs, outputs, script = work / "x.safetensors", work / "y.safetensors", work / "plain_timm.py"
    save_file({"x": x}, inputs)
    script.write_text(PLAIN_TIMM)
    result = subprocess.run(
        [sys.executable, str(script), str(export_dir), str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return load_file(outputs)["features"], result.stdout
