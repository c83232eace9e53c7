"""Decoding full-size JPEG photos to 224-px uint8 images, side by side in one process:

- ``pil_float`` — selfsup's previous ``load_image`` (PIL decode with ``draft``, float32 bicubic
  antialiased resize; a copy is kept below for this comparison);
- ``torchvision_uint8`` — ``selfsup.data.load_image`` now (``torchvision.io.decode_image``, uint8
  antialiased bilinear resize);
- with ``--device cuda`` also ``nvjpeg`` — ``selfsup.data.decode.decode_batch`` on batches of
  encoded files (what ``data.decode: gpu`` does in the training step), timed with CUDA events.

The CPU rates are for one DataLoader worker: one process with one torch thread (DataLoader
workers run with one). Medians over interleaved rounds.

The photos: scikit-learn ships two real photographs (``load_sample_images``: china.jpg and
flower.jpg, 640 x 427). Each test image is a random crop of one of them at a typical ImageNet size
(500 x 375, 375 x 500, 500 x 333, 333 x 500, 500 x 400 or the whole 640 x 427), saved as a
JPEG at quality 90 into a temporary folder; ``--count`` images, seed 0.

    python benchmarks/decode_throughput.py --count 256 --rounds 3
    python benchmarks/decode_throughput.py --count 256 --rounds 3 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from selfsup.data import load_image
from selfsup.data.images import read_bytes

SIZES = [(500, 375), (375, 500), (500, 333), (333, 500), (500, 400), (640, 427)]  # (width, height)


def make_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    sources = load_sample_images().images
    paths = []
    for i in range(count):
        src = sources[i % len(sources)]
        width, height = SIZES[int(rng.integers(len(SIZES)))]
        width, height = min(width, src.shape[1]), min(height, src.shape[0])
        top = int(rng.integers(0, src.shape[0] - height + 1))
        left = int(rng.integers(0, src.shape[1] - width + 1))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(src[top : top + height, left : left + width]).save(path, quality=90)
        paths.append(path)
    return paths


# --- selfsup's previous load_image, kept for the comparison -----------------------------------


def old_resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    x = image.unsqueeze(0)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(
        x.float(), size=(new_h, new_w), mode="bicubic", antialias=scale < 1, align_corners=False
    )
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[0, :, top : top + size, left : left + size].contiguous()


def old_load_image(path: Path, size: int) -> torch.Tensor:
    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        img.load()
        rgb = img.convert("RGB")
    tensor = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    return old_resize_center_crop(tensor, size)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), args.count)
        megapixels = statistics.mean(Image.open(p).size[0] * Image.open(p).size[1] for p in paths) / 1e6
        cases = {
            "pil_float": lambda: [old_load_image(p, args.size) for p in paths],
            "torchvision_uint8": lambda: [load_image(p, args.size) for p in paths],
        }
        if device.type == "cuda":
            from selfsup.data.decode import decode_batch

            encoded = [read_bytes(p).numpy() for p in paths]

            def nvjpeg():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                decode_batch(encoded, args.size, device)
                end.record()
                torch.cuda.synchronize()
                return start.elapsed_time(end) / 1000

        times: dict[str, list[float]] = {name: [] for name in cases}
        for fn in cases.values():  # warm-up
            fn()
        if device.type == "cuda":
            times["nvjpeg"] = []
            nvjpeg()
        for _ in range(args.rounds):
            for name, fn in cases.items():
                begin = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - begin)
            if device.type == "cuda":
                times["nvjpeg"].append(nvjpeg())
        rates = {name: args.count / statistics.median(t) for name, t in times.items()}
    print(
        f"{args.count} JPEG photos ({megapixels:.2f} MP on average) → {args.size}-px uint8, one worker "
        f"(1 thread, {os.cpu_count()} cores on the machine), images/s, median of {args.rounds} rounds"
    )
    for name, rate in rates.items():
        print(f"  {name:18s} {rate:9.1f}   x{rate / rates['pil_float']:.2f} of pil_float")
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
