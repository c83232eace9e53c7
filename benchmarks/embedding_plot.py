"""Wall time of ``selfsup probe --embedding_plot``'s map (``selfsup.eval.embedding_plot.embedding_png``:
the 2-D map and the drawing, not the feature extraction), t-SNE (umap-learn not imported):

- the digits' held-out split (360 images at 16 px) through a randomly initialised ViT-Tiny
  (4-px patches, 192-d class tokens);
- 10,000 random 192-d points in 10 classes, all of them (``--max_points 10000``) and the default
  random subset of ``MAX_POINTS``.

Each case runs ``--repeats`` times in this process after one untimed warm-up (imports); the median
is reported, with the CPU time of the process.

    OMP_NUM_THREADS=1 python benchmarks/embedding_plot.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from selfsup.eval.embedding_plot import MAX_POINTS, embedding_png


def digits_features() -> tuple[torch.Tensor, torch.Tensor]:
    import timm

    from selfsup.augment.normalize import Normalize
    from selfsup.data import ImageDataModule
    from selfsup.eval.features import extract_features

    torch.manual_seed(0)
    encoder = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, num_classes=0)
    data = ImageDataModule(image_size=16, batch_size=128, num_workers=0)
    data.setup("fit")
    normalize = Normalize((0.5,) * 3, (0.5,) * 3)
    return extract_features(encoder, data.eval_dataloader("val"), normalize, "token", "cpu")


def timed(features, labels, max_points: int, repeats: int, folder: Path) -> dict[str, float]:
    walls, cpus = [], []
    for i in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        embedding_png(features, labels, folder / f"{i}.png", "bench", max_points=max_points)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "runs": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large_repeats", type=int, default=1)
    args = parser.parse_args()
    sys.modules["umap"] = None  # the t-SNE fallback, whether or not umap-learn is installed
    folder = Path(tempfile.mkdtemp(prefix="embedding-bench-"))
    x, y = digits_features()
    g = torch.Generator().manual_seed(0)
    big, big_labels = torch.randn(10_000, 192, generator=g), torch.randint(0, 10, (10_000,), generator=g)
    embedding_png(x[:100], y[:100], folder / "warmup.png", "warm-up")
    results = {
        f"digits held-out ({len(x)} x {x.shape[1]})": timed(x, y, MAX_POINTS, args.repeats, folder),
        f"10,000 x 192 random, default subset of {MAX_POINTS:,}": timed(
            big, big_labels, MAX_POINTS, args.large_repeats, folder
        ),
        "10,000 x 192 random, all points": timed(big, big_labels, 10_000, args.large_repeats, folder),
    }
    print(json.dumps({"torch_threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
