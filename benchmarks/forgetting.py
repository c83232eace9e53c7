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

Prints a Markdown table (and ``--json`` writes the numbers). With ``--eval-every N`` the kNN of both
tasks is also taken every N steps of every run, and ``forgetting.png`` in ``--out`` plots it: the
curve of A's classes through training on A and then on B, with and without the term.
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


def model(args, lr: float | None = None, **continual) -> SimCLR:
    return SimCLR(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=args.patch_size,
        encoder_kwargs={"depth": args.depth},
        projection_hidden_dim=512,
        temperature=0.2,
        augment=SimCLRViewConfig(crop_scale=(0.2, 1.0), jitter_strength=0.5, blur_prob=0.0),
        optim=OptimConfig(base_lr=lr or args.lr, weight_decay=0.05, warmup_epochs=1),
        **continual,
    )


class Curve(L.Callback):
    """kNN of both tasks every ``every`` optimiser steps; the time it takes is left out of the run's
    training time (``eval_seconds``)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.points: list[tuple[int, dict[str, float]]] = []
        self.eval_seconds = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step < trainer.max_steps:
            start = time.perf_counter()
            self.points.append((step, knn(pl_module)))
            self.eval_seconds += time.perf_counter() - start


def fit(args, module: SimCLR, task: str, steps: int, out: Path | None = None) -> tuple[float, int, list]:
    L.seed_everything(args.seed)
    curve = Curve(args.eval_every) if args.eval_every else None
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[curve] if curve else None,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodules[task])
    seconds = time.perf_counter() - start - (curve.eval_seconds if curve else 0.0)
    if out is not None:
        trainer.save_checkpoint(out)
    return seconds, trainer.global_step, curve.points if curve else []


def knn(module: SimCLR, encoder=None) -> dict[str, float]:
    return {
        task: encoder_knn_top1(module, dm, k=20, temperature=0.07, pool="token", encoder=encoder)
        for task, dm in datamodules.items()
    }


def plot(path: Path, init, after_a, curve_a, steps_a, runs) -> None:
    """kNN on each task's classes against optimiser steps: training on A, then on B from A's encoder,
    one line per ``continual_weight``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, task in zip(axes, ("A", "B"), strict=True):
        points = [(0, init), *curve_a, (steps_a, after_a)]
        ax.plot(
            [s for s, _ in points],
            [100 * p[task] for _, p in points],
            "k-o" if curve_a else "k--o",
            ms=3,
            label="training on A" if curve_a else "training on A (an earlier run: its two ends)",
        )
        for (weight, (scores, _, steps, curve)), colour in zip(
            runs.items(), ("tab:red", "tab:blue", "tab:green"), strict=False
        ):
            points = [(0, after_a), *curve, (steps, scores)]
            ax.plot([steps_a + s for s, _ in points], [100 * p[task] for _, p in points], "-o", ms=3,
                    color=colour, label=f"then on B, continual_weight={weight:g}")  # fmt: skip
        ax.axvline(steps_a, color="grey", lw=0.8, ls=":")
        ax.set_title(f"kNN top-1 on task {task}'s classes ({', '.join(TASKS[task])})", fontsize=9)
        ax.set_xlabel("optimiser steps (A, then B)")
        ax.set_ylabel("kNN top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    parser.add_argument("--steps-b", type=int, default=None, help="steps of the runs on B (default: --steps)")
    parser.add_argument(
        "--per-class", type=int, default=500, help="training images per class (a fixed random subset)"
    )
    parser.add_argument("--val-per-class", type=int, default=200, help="held-out test images per class")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW base lr per 256 images")
    parser.add_argument("--lr-b", type=float, default=None, help="base lr of the runs on B (default: --lr)")
    parser.add_argument(
        "--task-a", default=None, help="an earlier run's task_a.ckpt (same settings): skip training on A"
    )
    parser.add_argument("--continual-weight", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="also take both tasks' kNN every N steps and plot it (0: off)",
    )
    parser.add_argument(
        "--out", default="runs/forgetting", help="folder for the task-A checkpoint and the plot"
    )
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
    if args.task_a:  # an earlier run's encoder after A: only its scores are taken again
        task_a, seconds_a, steps_a, curve_a = Path(args.task_a), 0.0, args.steps, []
        on_a = model(args, init_from=str(task_a))
    else:
        task_a = out / "task_a.ckpt"
        seconds_a, steps_a, curve_a = fit(args, on_a, "A", args.steps, task_a)
    after_a = knn(on_a)
    print(f"A: {steps_a} steps in {seconds_a:.0f} s; kNN {after_a}", flush=True)

    runs = {}
    for weight in (0.0, args.continual_weight):
        L.seed_everything(args.seed)
        on_b = model(args, args.lr_b, init_from=str(task_a), continual_weight=weight)
        seconds, steps, curve = fit(args, on_b, "B", args.steps_b or args.steps)
        runs[weight] = (knn(on_b), seconds, steps, curve)
        print(
            f"B (continual_weight={weight}): {steps} steps in {seconds:.0f} s; kNN {runs[weight][0]}",
            flush=True,
        )

    rows = [
        ("random initialisation", init, 0.0, 0),
        (f"after A ({steps_a} steps)", after_a, seconds_a, steps_a),
        *(
            (f"after A, then B, continual_weight={w:g}", scores, s, n)
            for w, (scores, s, n, _) in runs.items()
        ),
    ]
    print()
    print(f"SimCLR, ViT-Tiny {args.depth} blocks, 32 px, {args.patch_size}-px patches, batch {args.batch_size}, "
          f"{args.steps} steps on A{' (' + args.task_a + ')' if args.task_a else ''}, {args.steps_b or args.steps} on B; "
          f"base lr {args.lr:g} on A, {args.lr_b or args.lr:g} on B; ~{args.per_class} training / ~{args.val_per_class} held-out images per "
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
    if args.eval_every:
        for name, curve in [
            ("A", curve_a),
            *((f"B, continual_weight={w:g}", c) for w, (*_, c) in runs.items()),
        ]:
            print(f"curve, training on {name}: " + ", ".join(
                f"step {s}: A {100 * p['A']:.1f} / B {100 * p['B']:.1f}" for s, p in curve))  # fmt: skip
        plot(out / "forgetting.png", init, after_a, curve_a, steps_a, runs)
        print(f"plot: {out / 'forgetting.png'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "rows": [{"encoder": n, "knn_A": s["A"], "knn_B": s["B"], "seconds": t, "steps": k} for n, s, t, k in rows],
            "curves": {"A": curve_a, **{f"B_continual_weight_{w:g}": c for w, (*_, c) in runs.items()}},
        }, indent=2))  # fmt: skip


datamodules: dict[str, ImageDataModule] = {}

if __name__ == "__main__":
    main()
