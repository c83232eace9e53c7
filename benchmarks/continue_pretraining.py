"""Continuing DINOv2 from backbone-only "public" weights, with and without the head warm-up
(``head_warmup_steps``), measured at CPU scale.

The situation of dinov2 issue #204: only a backbone was released, so a continued DINOv2 run starts
with a good encoder and random DINO/iBOT heads, and the first updates push the heads' random
gradients into the encoder. Here, on two data sets at 16 px:

1. the "public" backbone: DINO on the scikit-learn digits (a 4-block ViT-Tiny, 4-px patches, the
   crops of ``configs/dino/digits.yaml``; 256 prototypes and teacher momentum 0.9, which learn in
   a short run, as ``tests/methods/test_dino.py``; ``--public-steps`` steps of 128), exported
   backbone-only with ``selfsup.export`` (the teacher's encoder; no head, no optimiser);
2. DINOv2 continued from that export (``init_from``) on ANOTHER data set, a fixed subset of
   CIFAR-10 at 16 px (DINOv2's crop scales, DINO's colour augmentation, 4 local crops of 8 px, a
   shared 1024-prototype head, teacher momentum 0.97, last layer not frozen), for ``--steps``
   steps, once with ``head_warmup_steps=0`` (the encoder trains from the first step, behind the
   method's own 1-epoch lr warm-up) and once with ``head_warmup_steps=N`` (the encoder's lr is 0
   for N steps while the heads, and the teacher's heads by EMA, learn to read it; then it ramps up
   over ``backbone_warmup_steps``), all else equal, for each seed.

Every ``--eval-every`` optimiser steps a callback (outside the training step) takes the weighted
kNN top-1 (k=20, T=0.07, class token) of the exported backbone (the teacher's encoder) on BOTH data
sets: the digits' held-out split with their training split as the bank (what the public backbone
knew), and CIFAR-10's held-out subset with ``--cifar-bank`` of its training subset as the bank
(what the continued run learns). The seeds run as separate processes, at most ``--jobs`` at once.

    OMP_NUM_THREADS=1 python benchmarks/continue_pretraining.py --out runs/continue_pretraining \
        --plot docs/continue_pretraining.png

Prints a Markdown table, writes ``results.json`` and the curves to ``continue_pretraining.png`` in
``--out`` (``--plot`` copies the figure there too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

from selfsup import DINO, DINOv2, ImageDataModule
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy
from selfsup.methods.dino import DINOViews
from selfsup.optim import OptimConfig

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
ENCODER = dict(encoder="vit_tiny_patch16_224", img_size=SIZE, patch_size=4, encoder_kwargs={"depth": 4})
HEAD = dict(out_dim=1024, hidden_dim=512, bottleneck_dim=128)
GREY_VIEWS = DINOViews(  # configs/dino/digits.yaml: grey digits that are not mirror-symmetric
    global_scale=(0.4, 1.0), local_scale=(0.1, 0.4), local_crops=4, local_size=8, hflip_prob=0.0,
    jitter_prob=0.0, grayscale_prob=0.0, blur_probs=(0.0, 0.0, 0.0), solarize_prob=0.0,
)  # fmt: skip
COLOUR_VIEWS = DINOViews(  # DINOv2's crop scales and DINO's colour; no blur at 16 px (blur_min_size)
    global_scale=(0.32, 1.0), local_scale=(0.05, 0.32), local_crops=4, local_size=8
)


def datasets(args) -> dict[str, ImageDataModule]:
    common = dict(image_size=SIZE, batch_size=args.batch_size, num_workers=0, seed=args.seed)
    return {
        "digits": ImageDataModule("digits", **common),
        "cifar10": ImageDataModule(
            "folder",
            args.cifar10,
            train_subset=args.cifar_train,
            val_subset=args.cifar_val,
            subset_seed=0,
            **common,
        ),
    }


class KNNCurve(L.Callback):
    """kNN top-1 of the module's backbone on every data set, before the first step and every
    ``every`` optimiser steps (the eval split's uint8 batches are read once and kept)."""

    def __init__(
        self, data: dict[str, ImageDataModule], every: int, tag: str = "", bank: int | None = None
    ) -> None:
        self.every, self.tag, self.begin = every, tag, time.perf_counter()
        self.splits = {
            name: (
                [
                    *dm.eval_dataloader(
                        "train", batch_size=512, max_samples=bank if name == "cifar10" else None
                    )
                ],
                [*dm.eval_dataloader("val", batch_size=512)],
            )
            for name, dm in data.items()
        }
        self.points: list[tuple[int, dict[str, float]]] = []
        self.seconds = 0.0
        print(f"{tag}: evaluation images read in {time.perf_counter() - self.begin:.0f} s", flush=True)

    def measure(self, module) -> dict[str, float]:
        start = time.perf_counter()
        scores = {}
        for name, (bank_batches, query_batches) in self.splits.items():
            bank, bank_labels = extract_features(module.backbone, bank_batches, module.normalize, "token")
            query, query_labels = extract_features(module.backbone, query_batches, module.normalize, "token")
            scores[name] = knn_accuracy(bank, bank_labels, query, query_labels, k=20, temperature=0.07)
        self.seconds += time.perf_counter() - start
        return scores

    def record(self, step: int, module) -> None:
        self.points.append((step, self.measure(module)))
        scores = ", ".join(f"{name} {100 * value:.1f}" for name, value in self.points[-1][1].items())
        print(f"{self.tag} step {step}: kNN {scores} ({time.perf_counter() - self.begin:.0f} s)", flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        self.record(0, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            self.record(step, pl_module)


def trainer(steps: int, callbacks: list) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip


def public_backbone(args, out: Path) -> tuple[Path, list]:
    """DINO on the digits, then ``selfsup.export`` of its backbone (the teacher's encoder)."""
    from selfsup import export

    L.seed_everything(0)
    data = datasets(argparse.Namespace(**{**vars(args), "seed": 0}))
    module = DINO(
        **ENCODER, **{**HEAD, "out_dim": 256}, teacher_momentum=0.9, warmup_teacher_temperature_epochs=2, augment=GREY_VIEWS,
        optim=OptimConfig(base_lr=1e-3, weight_decay=0.04, weight_decay_end=0.4, warmup_epochs=1, min_lr_ratio=0.002),
    )  # fmt: skip
    curve = KNNCurve(data, args.public_eval_every, "public DINO", args.cifar_bank)
    fit = trainer(args.public_steps, [curve])
    start = time.perf_counter()
    fit.fit(module, data["digits"])
    print(f"public backbone: DINO on the digits, {fit.global_step} steps in "
          f"{time.perf_counter() - start - curve.seconds:.0f} s; kNN {curve.points[-1][1]}", flush=True)  # fmt: skip
    checkpoint = out / "public.ckpt"
    fit.save_checkpoint(checkpoint)
    folder = export(checkpoint, out / "public", overwrite=True)
    checkpoint.unlink()
    return folder, curve.points


def continue_dinov2(args, public: Path, head_warmup: int) -> dict:
    L.seed_everything(args.seed)
    data = datasets(args)
    module = DINOv2(
        **ENCODER, **HEAD, separate_head=False, teacher_momentum=0.97, warmup_teacher_temperature_epochs=1, freeze_last_layer=0,
        augment=COLOUR_VIEWS, init_from=str(public), head_warmup_steps=head_warmup,
        backbone_warmup_steps=args.backbone_warmup if head_warmup else 0,
        optim=OptimConfig(base_lr=args.lr, weight_decay=0.04, weight_decay_end=0.4, warmup_epochs=1,
                          min_lr_ratio=0.002, layer_decay=0.9, patch_embed_lr_mult=0.2),
    )  # fmt: skip
    curve = KNNCurve(
        data, args.eval_every, f"seed {args.seed}, head_warmup_steps={head_warmup}", args.cifar_bank
    )
    fit = trainer(args.steps, [curve])
    start = time.perf_counter()
    fit.fit(module, data["cifar10"])
    seconds = time.perf_counter() - start - curve.seconds
    print(f"seed {args.seed}, head_warmup_steps={head_warmup}: {fit.global_step} steps in {seconds:.0f} s "
          f"(+{curve.seconds:.0f} s of kNN); kNN {curve.points[-1][1]}", flush=True)  # fmt: skip
    return {"seed": args.seed, "head_warmup_steps": head_warmup, "seconds": seconds, "curve": curve.points}


def plot(path: Path, public_curve: list, runs: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    names = {
        "digits": "digits (the public backbone's data)",
        "cifar10": "CIFAR-10 16 px (the continued run's data)",
    }
    colours = {0: "tab:red", args.head_warmup: "tab:blue"}
    for ax, (name, title) in zip(axes, names.items(), strict=True):
        ax.axhline(100 * public_curve[-1][1][name], color="grey", lw=0.8, ls=":", label="public backbone")
        for warmup, colour in colours.items():
            chosen = [r for r in runs if r["head_warmup_steps"] == warmup]
            steps = [s for s, _ in chosen[0]["curve"]]
            values = torch.tensor([[100 * p[name] for _, p in r["curve"]] for r in chosen])
            for row in values:
                ax.plot(steps, row, color=colour, lw=0.6, alpha=0.5)
            ax.plot(steps, values.mean(0), "-o", ms=3, color=colour,
                    label=f"head_warmup_steps={warmup} (mean of {len(chosen)} seeds; thin: each)")  # fmt: skip
        ax.axvline(args.head_warmup, color="tab:blue", lw=0.8, ls="--")
        ax.set_title(f"kNN top-1 on {title}", fontsize=9)
        ax.set_xlabel("DINOv2 optimiser steps on CIFAR-10, from the public backbone")
        ax.set_ylabel("kNN top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cifar10", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    parser.add_argument("--public-steps", type=int, default=100, help="DINO steps on the digits")
    parser.add_argument("--public", default=None, help="an earlier run's public export: skip step 1")
    parser.add_argument("--steps", type=int, default=60, help="DINOv2 steps on CIFAR-10 per run")
    parser.add_argument("--head-warmup", type=int, default=15, help="N of head_warmup_steps=N")
    parser.add_argument("--backbone-warmup", type=int, default=10, help="backbone_warmup_steps with N")
    parser.add_argument("--lr", type=float, default=1e-3, help="base lr per 256 images of the continued runs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cifar-train", type=int, default=2000, help="CIFAR-10 training subset")
    parser.add_argument("--cifar-val", type=int, default=500, help="CIFAR-10 held-out subset")
    parser.add_argument(
        "--cifar-bank", type=int, default=1000, help="CIFAR-10 training images in the kNN bank"
    )
    parser.add_argument("--eval-every", type=int, default=10, help="kNN every N steps of the continued runs")
    parser.add_argument("--public-eval-every", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once, one process each")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="runs/continue_pretraining")
    parser.add_argument(
        "--plot", default=None, help="also copy the figure here (docs/continue_pretraining.png)"
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.worker:  # one seed, both settings
        runs = [continue_dinov2(args, Path(args.public), warmup) for warmup in (0, args.head_warmup)]
        Path(args.worker).write_text(json.dumps(runs))
        return
    begin = time.perf_counter()
    public_curve: list = []
    public = Path(args.public) if args.public else None
    if public is None:
        public, public_curve = public_backbone(args, out)
    workers: list[tuple[subprocess.Popen, Path]] = []
    runs: list[dict] = []
    pending = list(args.seeds)
    while pending or workers:
        while pending and len(workers) < args.jobs:
            seed = pending.pop(0)
            result = out / f"seed_{seed}.json"
            command = [sys.executable, __file__, *sys.argv[1:], "--seed", str(seed), "--public", str(public),
                       "--worker", str(result)]  # fmt: skip
            workers.append((subprocess.Popen(command), result))
        process, result = workers.pop(0)
        if process.wait() != 0:
            raise SystemExit(
                f"the worker {result.stem} failed (exit {process.returncode}); see its output above."
            )
        runs.extend(json.loads(result.read_text()))
    if not public_curve:
        public_curve = [(0, KNNCurve(datasets(args), 1, "public", args.cifar_bank).measure(_loaded(public)))]
    seconds = time.perf_counter() - begin

    print()
    print(f"Public backbone: DINO, ViT-Tiny 4 blocks, 16 px, 4-px patches, {args.public_steps} steps on the digits; "
          f"continued: DINOv2 on CIFAR-10 ({args.cifar_train} training / {args.cifar_val} held-out images) at 16 px, "
          f"{args.steps} steps of {args.batch_size}, base lr {args.lr:g}; head_warmup_steps 0 vs {args.head_warmup} "
          f"(then backbone_warmup_steps {args.backbone_warmup}); seeds {args.seeds}; total {seconds:.0f} s")  # fmt: skip
    print()
    steps = [s for s, _ in runs[0]["curve"]]
    for name in ("digits", "cifar10"):
        print(f"kNN top-1 (%) on {name}; public backbone {100 * public_curve[-1][1][name]:.1f}")
        print()
        print("| head_warmup_steps | seed | " + " | ".join(f"step {s}" for s in steps) + " |")
        print("|---|---|" + "---:|" * len(steps))
        for run in sorted(runs, key=lambda r: (r["head_warmup_steps"], r["seed"])):
            print(f"| {run['head_warmup_steps']} | {run['seed']} | "
                  + " | ".join(f"{100 * p[name]:.1f}" for _, p in run["curve"]) + " |")  # fmt: skip
        print()
    (out / "results.json").write_text(json.dumps({
        "args": vars(args), "machine": platform.processor() or platform.machine(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "seconds": seconds,
        "public_curve": public_curve, "runs": runs,
    }, indent=1))  # fmt: skip
    plot(out / "continue_pretraining.png", public_curve, runs, args)
    if args.plot:
        shutil.copyfile(out / "continue_pretraining.png", args.plot)
    print(f"plot: {out / 'continue_pretraining.png'}")


def _loaded(public: Path):
    """A DINO module whose backbone is the export (for its kNN when step 1 was skipped)."""
    return DINO(**ENCODER, **{**HEAD, "out_dim": 256}, augment=GREY_VIEWS, init_from=str(public))


if __name__ == "__main__":
    main()
