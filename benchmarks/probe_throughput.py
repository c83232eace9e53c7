"""Frozen-feature extraction speed and probe wall time on all of CIFAR-10 (50,000 / 10,000 images).

Builds a ViT-Tiny SimCLR checkpoint with the encoder of configs/simclr/vit_tiny_cifar10.yaml
(32 px, 4-px patches; weights after one training step: the speed does not depend on them), then
runs ``selfsup probe`` on it twice: the first run extracts the features (timed: images/s) and
fits kNN (k=20, 200) and the linear probe; the second reads the cached features.

    python benchmarks/probe_throughput.py --root ../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

import selfsup.eval.probe as probe_module
from selfsup import ImageDataModule, SimCLR
from selfsup.checkpoint import AtomicCheckpointIO


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="../shared/data/cifar10")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="selfsup_probe_bench_"))
    L.seed_everything(0, verbose=False)
    data = ImageDataModule(
        "folder", args.root, image_size=32, batch_size=args.batch_size, num_workers=args.workers
    )
    model = SimCLR("vit_tiny_patch16_224", patch_size=4, img_size=32)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(model, data)
    checkpoint = work / "vit_tiny_cifar10.ckpt"
    trainer.save_checkpoint(checkpoint)

    extraction = {"seconds": 0.0, "images": 0}
    real_extract = probe_module.extract_features

    def timed_extract(*a, **k):
        start = time.perf_counter()
        features, labels = real_extract(*a, **k)
        extraction["seconds"] += time.perf_counter() - start
        extraction["images"] += len(labels)
        return features, labels

    probe_module.extract_features = timed_extract
    start = time.perf_counter()
    (first,) = probe_module.probe(
        [checkpoint], out=work / "probe", cache_dir=work / "cache", device=args.device
    )
    first_wall = time.perf_counter() - start
    start = time.perf_counter()
    (second,) = probe_module.probe(
        [checkpoint], out=work / "probe", cache_dir=work / "cache", device=args.device
    )
    second_wall = time.perf_counter() - start
    rate = extraction["images"] / extraction["seconds"]
    print(
        f"\nViT-Tiny/4 at 32 px on {args.device}, {torch.get_num_threads()} threads, {args.workers} decode workers"
    )
    print(
        f"  feature extraction: {extraction['images']} images in {extraction['seconds']:.1f} s = {rate:.1f} images/s"
    )
    print(f"  probe, first run (extract + kNN k=20,200 + linear probe): {first_wall:.1f} s")
    print(f"  probe, second run (features from the cache): {second_wall:.1f} s")
    print(
        f"  (train {first.num_train}, held-out {first.num_val}; cached second run: {second.features_from_cache})"
    )
    print(
        json.dumps(
            {
                "images_per_s": rate,
                "first_wall_s": first_wall,
                "second_wall_s": second_wall,
                "num_train": first.num_train,
                "num_val": first.num_val,
            }
        )
    )


if __name__ == "__main__":
    main()
