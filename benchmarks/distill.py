"""Distillation vs direct pretraining of a small ViT at an equal wall-clock budget, on a CIFAR-10
subset (``selfsup.Distill``).

1. The teacher: a ViT-S-like encoder (6 blocks, 384 wide, 6 heads; 32 px, 8-px patches) pretrained
   with SimCLR for ``--teacher-seconds``.
2. The student, a ViT-Tiny (4 blocks, 192 wide, 3 heads; 32 px, 8-px patches), two ways with the same
   wall-clock budget ``--student-seconds`` and the same seed, data and batch size:
   a. distilled from the frozen teacher (``Distill``: the same SimCLR-style view for both, cosine
      on the class token through a learned 192 -> 384 projection; ``--patch-weight`` adds the MSE
      on the 16 patch tokens);
   b. pretrained by SimCLR directly.

Equal wall-clock budgets become step counts: a few steps of a throwaway copy of each run time its
step (the median of the last 3 of 5), and the run gets ``budget / step time`` steps, so that its
schedule (AdamW, linear warm-up over the first 10 % of the steps, cosine to 0: short SimCLR runs
learn little without the decay, measured) ends at the budget. The table gives the time each run
really took. Scores, for the
teacher, both students and the student architecture at random initialisation: weighted kNN top-1
(k=20, T=0.07) and a linear probe (``selfsup.eval.linear_probe``: standardised features, SGD,
100 epochs) on the class token, trained on the training subset and scored on held-out test images.

    python benchmarks/distill.py --root ../shared/data/cifar10 --teacher-seconds 300 --student-seconds 120

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
from lightning.pytorch.callbacks import Callback

from selfsup import Distill, ImageDataModule, SimCLR
from selfsup.augment import SimCLRViewConfig
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear_probe import topk_accuracy, train_linear_probe
from selfsup.export import export, load_encoder
from selfsup.optim import OptimConfig

VIEW = SimCLRViewConfig(crop_scale=(0.2, 1.0), jitter_strength=0.5, blur_prob=0.0)
TEACHER = {"depth": 6, "embed_dim": 384, "num_heads": 6}
STUDENT = {"depth": 4, "embed_dim": 192, "num_heads": 3}


class Clock(Callback):
    """The time of each training step, and of the whole run from its first batch."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())

    @property
    def elapsed(self) -> float:
        return self.ends[-1] - self.start if self.ends else 0.0

    def seconds_per_step(self, last: int = 3) -> float:
        gaps = sorted(b - a for a, b in zip(self.ends[-last - 1 : -1], self.ends[-last:], strict=True))
        return gaps[len(gaps) // 2]


def optim(args, steps: int = 100, batch_size: int = 256) -> OptimConfig:
    """AdamW, warm-up over the first 10 % of ``steps`` (in epochs of the training subset), cosine to 0."""
    per_epoch = max(1, args.train_images // batch_size)
    return OptimConfig(base_lr=args.lr, weight_decay=0.05, warmup_epochs=0.1 * steps / per_epoch)


def simclr(args, encoder_kwargs, optim_config: OptimConfig | None = None) -> SimCLR:
    return SimCLR("vit_tiny_patch16_224", img_size=32, patch_size=8, encoder_kwargs=encoder_kwargs,
                  projection_hidden_dim=512, temperature=0.2, augment=VIEW, optim=optim_config or optim(args))  # fmt: skip


def distill(args, teacher: str, optim_config: OptimConfig | None = None) -> Distill:
    return Distill("vit_tiny_patch16_224", img_size=32, patch_size=8, encoder_kwargs=STUDENT, teacher=teacher,
                   loss="cosine", center_momentum=args.center_momentum, patch_weight=args.patch_weight, augment=VIEW,
                   optim=optim_config or optim(args))  # fmt: skip


def budget_steps(args, build, batch_size: int, seconds: float) -> tuple[int, float]:
    """``(steps that fill seconds, seconds per step)``, timed on 5 steps of a throwaway ``build()``."""
    clock = Clock()
    L.seed_everything(args.seed)
    trainer = L.Trainer(accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])  # fmt: skip
    trainer.fit(build(), data(args, batch_size))
    per_step = clock.seconds_per_step()
    return max(10, int(seconds / per_step)), per_step


def data(args, batch_size: int) -> ImageDataModule:
    return ImageDataModule("folder", args.root, image_size=32, batch_size=batch_size, num_workers=args.workers,
                           train_subset=args.train_images, val_subset=args.test_images, seed=args.seed)  # fmt: skip


def fit(args, module, batch_size: int, steps: int, checkpoint: Path | None = None) -> tuple[float, int]:
    L.seed_everything(args.seed)
    clock = Clock()
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])  # fmt: skip
    trainer.fit(module, data(args, batch_size))
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    return clock.elapsed, trainer.global_step


def scores(args, module, encoder=None) -> dict[str, float]:
    """kNN top-1 and linear-probe top-1 of ``encoder`` (default: the module's backbone)."""
    encoder = encoder if encoder is not None else module.backbone
    dm = data(args, 256)
    start = time.perf_counter()
    train, train_labels = extract_features(encoder, dm.eval_dataloader("train"), module.normalize, "token")
    test, test_labels = extract_features(encoder, dm.eval_dataloader("val"), module.normalize, "token")
    knn = knn_accuracy(train, train_labels, test, test_labels, k=20, temperature=0.07, num_classes=10)
    probe = train_linear_probe(train, train_labels, num_classes=10, epochs=100, seed=args.seed)
    linear = topk_accuracy(probe.logits(test), test_labels, ks=(1,))[1]
    return {"knn": knn, "linear": linear, "eval_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10")
    )
    parser.add_argument(
        "--train-images", type=int, default=5000, help="fixed random training subset (~500 per class)"
    )
    parser.add_argument("--test-images", type=int, default=1000, help="fixed random subset of the test split")
    parser.add_argument("--teacher-seconds", type=float, default=300)
    parser.add_argument("--teacher", default=None, help="an earlier run's teacher export: skip training one")
    parser.add_argument("--patch-weight", type=float, default=0.0, help="Distill's patch-token target weight")
    parser.add_argument(
        "--center-momentum",
        type=float,
        default=None,
        help="Distill's centring of the pooled target (None: off)",
    )
    parser.add_argument("--student-seconds", type=float, default=120)
    parser.add_argument(
        "--skip-simclr-student", action="store_true", help="only the distilled student (e.g. with --teacher)"
    )
    parser.add_argument("--teacher-batch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256, help="both students")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW base lr per 256 images (every run)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default="runs/distill_benchmark", help="folder for the teacher's checkpoint and export"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    rows = []

    def run(name, build, batch_size, seconds, checkpoint=None):
        steps, per_step = budget_steps(args, lambda: build(None), batch_size, seconds)
        print(f"{name}: {per_step:.2f} s per step of {batch_size}: {steps} steps", flush=True)
        L.seed_everything(args.seed)
        module = build(optim(args, steps, batch_size))
        took, done = fit(args, module, batch_size, steps, checkpoint)
        rows.append((name, scores(args, module), took, done, batch_size))
        print(rows[-1], flush=True)
        return module

    if args.teacher is None:
        run("teacher: ViT 6x384, SimCLR", lambda o: simclr(args, TEACHER, o), args.teacher_batch_size,
            args.teacher_seconds, out / "teacher.ckpt")  # fmt: skip
        teacher_dir = str(export(out / "teacher.ckpt", out / "teacher", overwrite=True))
    else:  # an earlier run's teacher: scored again, not trained
        teacher_dir = args.teacher
        reused = simclr(args, TEACHER)
        reused.encoder.load_state_dict(load_encoder(teacher_dir).state_dict())
        rows.append((f"teacher: ViT 6x384, SimCLR (reused: {teacher_dir})", scores(args, reused), 0.0, 0, 0))
        print(rows[-1], flush=True)
    L.seed_everything(args.seed)
    rows.append(
        ("student ViT-Tiny 4x192 at random init", scores(args, distill(args, teacher_dir)), 0.0, 0, 0)
    )
    print(rows[-1], flush=True)
    kind = (
        "class token"
        + (f", centred (momentum {args.center_momentum:g})" if args.center_momentum is not None else "")
        + (f" + patch tokens (patch_weight {args.patch_weight:g})" if args.patch_weight else "")
    )
    run(f"student, distilled from the teacher ({kind})", lambda o: distill(args, teacher_dir, o), args.batch_size,
        args.student_seconds)  # fmt: skip
    if not args.skip_simclr_student:
        run(
            "student, SimCLR directly",
            lambda o: simclr(args, STUDENT, o),
            args.batch_size,
            args.student_seconds,
        )

    print()
    print(f"CIFAR-10 at 32 px, 8-px patches; {args.train_images} training images (fixed random subset), "
          f"{args.test_images} test images; training budgets: teacher {'reused' if args.teacher else f'{args.teacher_seconds:.0f} s'}, each student "
          f"{args.student_seconds:.0f} s; total {time.perf_counter() - begin:.0f} s")  # fmt: skip
    print()
    print("| encoder | kNN top-1 (%) | linear probe top-1 (%) | train time (s) | steps x batch |")
    print("|---|---:|---:|---:|---:|")
    for name, result, seconds, steps, batch in rows:
        print(f"| {name} | {100 * result['knn']:.1f} | {100 * result['linear']:.1f} | {seconds:.0f} | "
              f"{steps} x {batch} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "rows": [{"encoder": n, **r, "seconds": s, "steps": k, "batch": b} for n, r, s, k, b in rows],
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
