"""Forgetting in continual self-supervised pretraining, with and without the continual distillation
term (``continual_weight``, CaSSLe: Fini et al. 2022).

CIFAR-10's classes in two disjoint halves: task A = classes 0-4 (airplane, automobile, bird, cat,
deer), task B = classes 5-9 (dog, frog, horse, ship, truck), each an ``ImageDataModule`` with
``classes``. Three SimCLR runs of a small ViT-Tiny, the same number of steps each:

1. on A from random initialisation, then a checkpoint;
2. on B starting from that checkpoint (``init_from``: encoder weights only, a fresh optimiser),
   ``continual_weight=0``;
3. the same as 2 (same seed, same batches) with ``continual_weight > 0``: a frozen copy of the
   A-encoder is a distillation teacher through a predictor.

Scores: weighted kNN top-1 (k=20, T=0.07, class token) on each task's held-out test images, with
that task's training images as the bank (5-way each: chance is 20 %), for the random
initialisation, after A, after B without and after B with the term. Forgetting = how much of what
A taught is lost on A's classes after B.

    python benchmarks/forgetting.py --root ../shared/data/cifar10 --steps 50

Prints a Markdown table (and ``--json`` writes the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import lightning as L
import torch

from selfsup import ImageDataModule, SimCLR
from selfsup.augment import SimCLRViewConfig
from selfsup.eval.callbacks import encoder_knn_top1
from selfsup.optim import OptimConfig

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TASKS = {"A": CIFAR10[:5], "B": CIFAR10[5:]}


def data(args, task: str) -> ImageDataModule:
    return ImageDataModule(
        "folder",
        args.root,
        image_size=32,
        batch_size=args.batch_size,
        num_workers=args.workers,
        classes=TASKS[task],
        train_subset=5 * args.per_class,
        val_subset=5 * args.val_per_class,
        subset_seed=0,
        seed=args.seed,
    )


def model(args, **continual) -> SimCLR:
    return SimCLR(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=args.patch_size,
        encoder_kwargs={"depth": args.depth},
        projection_hidden_dim=512,
        temperature=0.2,
        augment=SimCLRViewConfig(crop_scale=(0.2, 1.0), jitter_strength=0.5, blur_prob=0.0),
        optim=OptimConfig(base_lr=args.lr, weight_decay=0.05, warmup_epochs=1),
        **continual,
    )


def fit(args, module: SimCLR, task: str, out: Path | None = None) -> tuple[float, int]:
    L.seed_everything(args.seed)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodules[task])
    seconds = time.perf_counter() - start
    if out is not None:
        trainer.save_checkpoint(out)
    return seconds, trainer.global_step


def knn(module: SimCLR, encoder=None) -> dict[str, float]:
    return {
        task: encoder_knn_top1(module, dm, k=20, temperature=0.07, pool="token", encoder=encoder)
        for task, dm in datamodules.items()
    }


def class_counts(dm: ImageDataModule, split: str) -> list[int]:
    labels = torch.cat([labels for _, labels in dm.eval_dataloader(split, batch_size=1024)])
    return torch.bincount(labels, minlength=len(dm.classes)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10")
    )
    parser.add_argument("--steps", type=int, default=50, help="optimiser steps of each of the three runs")
    parser.add_argument(
        "--per-class", type=int, default=500, help="training images per class (a fixed random subset)"
    )
    parser.add_argument("--val-per-class", type=int, default=200, help="held-out test images per class")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW base lr per 256 images")
    parser.add_argument("--continual-weight", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/forgetting", help="folder for the task-A checkpoint")
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args()

    global datamodules
    datamodules = {task: data(args, task) for task in TASKS}
    begin = time.perf_counter()
    for task, dm in datamodules.items():
        dm.setup()
        print(f"task {task}: {dm.classes}; train images per class {class_counts(dm, 'train')}, "
              f"held-out per class {class_counts(dm, 'val')}", flush=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    L.seed_everything(args.seed)
    on_a = model(args)
    init = knn(on_a)
    seconds_a, steps_a = fit(args, on_a, "A", out / "task_a.ckpt")
    after_a = knn(on_a)
    print(f"A: {steps_a} steps in {seconds_a:.0f} s; kNN {after_a}", flush=True)

    runs = {}
    for weight in (0.0, args.continual_weight):
        L.seed_everything(args.seed)
        on_b = model(args, init_from=str(out / "task_a.ckpt"), continual_weight=weight)
        seconds, steps = fit(args, on_b, "B")
        runs[weight] = (knn(on_b), seconds, steps)
        print(
            f"B (continual_weight={weight}): {steps} steps in {seconds:.0f} s; kNN {runs[weight][0]}",
            flush=True,
        )

    rows = [
        ("random initialisation", init, 0.0, 0),
        (f"after A ({steps_a} steps)", after_a, seconds_a, steps_a),
        *((f"after A, then B, continual_weight={w:g}", scores, s, n) for w, (scores, s, n) in runs.items()),
    ]
    print()
    print(f"SimCLR, ViT-Tiny {args.depth} blocks, 32 px, {args.patch_size}-px patches, batch {args.batch_size}, "
          f"{args.steps} steps per task; ~{args.per_class} training / ~{args.val_per_class} held-out images per "
          f"class; kNN top-1 (k=20) on each task's 5 classes; total {time.perf_counter() - begin:.0f} s")  # fmt: skip
    print()
    print("| encoder | kNN top-1, task A classes (%) | kNN top-1, task B classes (%) | train time (s) |")
    print("|---|---:|---:|---:|")
    for name, scores, seconds, _ in rows:
        print(f"| {name} | {100 * scores['A']:.1f} | {100 * scores['B']:.1f} | {seconds:.0f} |")
    without, with_ = runs[0.0][0], runs[args.continual_weight][0]
    print()
    print(f"forgetting on A (after A minus after B): {100 * (after_a['A'] - without['A']):+.1f} points without the "
          f"term, {100 * (after_a['A'] - with_['A']):+.1f} points with continual_weight={args.continual_weight:g}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "rows": [{"encoder": n, "knn_A": s["A"], "knn_B": s["B"], "seconds": t, "steps": k} for n, s, t, k in rows],
        }, indent=2))  # fmt: skip


datamodules: dict[str, ImageDataModule] = {}

if __name__ == "__main__":
    main()
