"""SimCLR, MAE, DINO and MoCo v3 at an equal compute budget on a CIFAR-10 subset, then kNN and a
linear probe of each (``selfsup.eval.probe``), side by side. A small, CPU-sized comparison of what a
few minutes buy; no claim about long schedules.

The budget is **CPU seconds of this process** (``time.process_time``) with one torch thread, not
wall-clock seconds: on a shared machine another process's load then costs no method its budget.
Each method first times a few steps of its own (after 2 warm-up steps), and is then given as many
steps as fit in the budget, so that its whole schedule (10 % linear warm-up, cosine decay to 0,
and for the EMA methods the momentum's cosine to 1) runs to its end within the budget; a hard stop
at the budget guards against a low estimate. Every method trains the same encoder (a ViT-Tiny at
32 px, ``--depth`` blocks, 8-px patches) on the same images from the same seed, with its own
paper's recipe scaled to 32 px as in ``configs/<method>/vit_tiny_cifar10.yaml`` (DINO with 2 global
+ ``--local_crops`` local crops, MoCo v3 at tau 0.2, MAE at mask ratio 0.75), AdamW, and what runs
this short need: EMA momentum from 0.99, DINO's teacher temperature warmed up over one epoch and
its last layer never frozen (the paper freezes it for the first of 100+ epochs).

    python benchmarks/method_comparison.py --data ../shared/data/cifar10 --budget 180 --out /tmp/methods
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


class CPUBudget:
    """Stop training once this process has used ``seconds`` of CPU time."""

    def __init__(self, seconds: float, save_init: Path | None = None) -> None:
        import lightning as L

        budget = self

        class Callback(L.Callback):
            def on_train_start(self, trainer, pl_module):
                if save_init is not None:  # the random-init row: the first method's encoder before training
                    trainer.save_checkpoint(save_init)
                budget.start = time.process_time()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if time.process_time() - budget.start >= seconds:
                    trainer.should_stop = True

        self.callback = Callback()
        self.start = 0.0


def build(method: str, depth: int, local_crops: int, warmup_epochs: float):
    from selfsup import DINO, MAE, MoCoV3, SimCLR
    from selfsup.augment import SimCLRViewConfig
    from selfsup.optim import OptimConfig

    encoder = {
        "encoder": "vit_tiny_patch16_224",
        "img_size": 32,
        "patch_size": 8,
        "encoder_kwargs": {"depth": depth},
    }
    # SimCLR and MoCo v3: the base lr of the CIFAR-10 learning check (tests/test_learning.py)
    optim = OptimConfig(base_lr=2e-3, weight_decay=0.05, warmup_epochs=warmup_epochs)
    if method == "simclr":
        return SimCLR(**encoder, temperature=0.2, projection_hidden_dim=512, optim=optim,
                      augment=SimCLRViewConfig(crop_scale=(0.2, 1.0), jitter_strength=0.5, blur_prob=0.0))  # fmt: skip
    if method == "mae":
        return MAE(
            **encoder, optim=OptimConfig(base_lr=1.5e-4 * 4, weight_decay=0.05, warmup_epochs=warmup_epochs)
        )
    if method == "dino":
        return DINO(**encoder, out_dim=4096, hidden_dim=512, bottleneck_dim=128, teacher_momentum=0.99,
                    warmup_teacher_temperature_epochs=1, freeze_last_layer=0, augment={"local_crops": local_crops},
                    optim=OptimConfig(base_lr=5e-4, weight_decay=0.04, weight_decay_end=0.4,
                                      warmup_epochs=warmup_epochs))  # fmt: skip
    if method == "mocov3":
        return MoCoV3(**encoder, momentum=0.99, projection_hidden_dim=512, prediction_hidden_dim=512,
                      projection_dim=128, optim=optim)  # fmt: skip
    raise ValueError(method)


def cpu_seconds_per_step(method: str, args, data_args: dict, steps: int = 5) -> float:
    """Median CPU seconds of one training step of ``method`` (after 2 warm-up steps)."""
    import statistics

    import lightning as L

    from selfsup import ImageDataModule

    times: list[float] = []

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx >= 2:
                times.append(time.process_time() - self.start)

    L.seed_everything(0)
    model = build(method, args.depth, args.local_crops, 1.0)
    data = ImageDataModule(**data_args, batch_size=args.batch_size, num_workers=1)
    L.Trainer(accelerator="cpu", max_steps=steps + 2, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()]).fit(model, data)  # fmt: skip
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data/cifar10")
    parser.add_argument("--budget", type=float, default=240.0, help="CPU seconds of training per method")
    parser.add_argument("--methods", nargs="+", default=["simclr", "mae", "dino", "mocov3"])
    parser.add_argument("--train_subset", type=int, default=5000)
    parser.add_argument("--val_subset", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--local_crops", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--out", default="/tmp/method_comparison")
    args = parser.parse_args()

    import lightning as L
    import torch
    from rich.console import Console
    from rich.table import Table

    from selfsup import ImageDataModule
    from selfsup.eval.probe import probe

    torch.set_num_threads(1)
    out = Path(args.out)
    data_args = {"source": "folder", "root": args.data, "image_size": 32, "train_subset": args.train_subset,
                 "val_subset": args.val_subset}  # fmt: skip
    rows = []
    per_epoch = args.train_subset // args.batch_size
    for method in args.methods:
        per_step = cpu_seconds_per_step(method, args, data_args)
        steps = max(1, int(args.budget / per_step))
        print(
            f"{method}: {per_step:.2f} CPU-s per step -> {steps} steps in {args.budget:.0f} CPU-s", flush=True
        )
        L.seed_everything(0)
        model = build(method, args.depth, args.local_crops, warmup_epochs=0.1 * steps / per_epoch)
        data = ImageDataModule(**data_args, batch_size=args.batch_size, num_workers=1)
        init = out / "init.ckpt" if not rows else None
        budget = CPUBudget(args.budget, init)
        trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[budget.callback])  # fmt: skip
        wall = time.perf_counter()
        trainer.fit(model, data)
        wall = time.perf_counter() - wall
        path = out / method / "last.ckpt"
        trainer.save_checkpoint(path)
        if init is not None:
            rows.append((f"random init ({method})", 0, 0.0, 0.0, init))
        rows.append((method, trainer.global_step, time.process_time() - budget.start, wall, path))
    results = probe(
        [r[-1] for r in rows], data=data_args, out=out / "probe", cache_dir=out / "cache", device="cpu"
    )
    table = Table(
        title=f"{args.budget:.0f} CPU-s of training each, CIFAR-10 {args.train_subset} / {args.val_subset} images, 32 px"
    )
    for column in ("method", "steps", "train CPU-s", "train wall-s", "kNN@20 %", "linear top-1 %"):
        table.add_column(column, justify="right")
    for (method, steps, cpu, wall, _), result in zip(rows, results, strict=True):
        table.add_row(method, str(steps), f"{cpu:.0f}", f"{wall:.0f}", f"{100 * result.knn_top1[20]:.1f}",
                      f"{100 * result.linear_top1:.1f}")  # fmt: skip
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
