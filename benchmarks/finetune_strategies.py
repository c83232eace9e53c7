"""Fine-tuning strategies side by side: trainable parameters, step time, peak memory and accuracy
after the same number of steps, for a ViT-Tiny on a CIFAR-10 subset on the CPU.

1. Pretrain the encoder briefly with SimCLR (the set-up of the CIFAR learning test: 4,000 images,
   4 epochs, a 4-block ViT-Tiny at 32 px with 8-px patches) and export it.
2. Fine-tune it with every strategy for the same number of steps on 4,000 training images, then
   score top-1 on 1,000 held-out test images. Each strategy runs in its own process. Memory is the
   training process's peak resident set during ``fit`` (VmHWM, reset just before ``fit``), minus its
   resident set before ``fit`` (the Python runtime, torch and the model): what the strategy adds
   (activations kept for backward, gradients, optimiser state). DataLoader workers are not counted.

    python benchmarks/finetune_strategies.py --root ../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

STRATEGIES = ["linear", "full", "partial", "bitfit", "lora", "adapter", "prompt"]

CHILD = r"""
import json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import lightning as L
from selfsup import FineTune, ImageDataModule
args = json.loads(sys.argv[1])
L.seed_everything(0, verbose=False)
module = FineTune(args["backbone"], num_classes=10, strategy=args["strategy"], img_size=32, label_smoothing=0.0,
                  augment={"crop_scale": (0.35, 1.0)},
                  optim={"base_lr": args["lr"], "weight_decay": 0.05, "warmup_epochs": 0.5})
times = []
class Timer(L.Callback):
    def on_train_batch_start(self, *a):
        self.t = time.perf_counter()
    def on_train_batch_end(self, *a):
        times.append(time.perf_counter() - self.t)
data = ImageDataModule("folder", args["root"], image_size=32, batch_size=args["batch"], num_workers=2,
                       train_subset=args["train"], val_subset=args["val"])
trainer = L.Trainer(accelerator="cpu", max_steps=args["steps"], logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()],
                    check_val_every_n_epoch=10_000, num_sanity_val_steps=0)
def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
rss_before = vm("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM (the peak) to the current resident set
trainer.fit(module, data)
peak_fit = vm("VmHWM")
metrics = trainer.validate(module, data, verbose=False)[0]
summary = module.trainable_summary()
print("RESULT " + json.dumps({"trainable": summary["trainable"], "share": summary["share"],
                              "step_s": statistics.median(times[3:]), "top1": metrics["val/top1"],
                              "rss_before_mb": rss_before, "peak_fit_mb": peak_fit}))
"""


def pretrain(root: str, work: Path) -> Path:
    import lightning as L

    from selfsup import ImageDataModule, SimCLR
    from selfsup.augment import SimCLRViewConfig
    from selfsup.export import export
    from selfsup.optim import OptimConfig

    L.seed_everything(0)
    data = ImageDataModule(
        "folder", root, image_size=32, batch_size=256, num_workers=2, train_subset=4000, val_subset=1000
    )
    model = SimCLR(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        encoder_kwargs={"depth": 4},
        projection_hidden_dim=512,
        temperature=0.2,
        augment=SimCLRViewConfig(crop_scale=(0.2, 1.0), jitter_strength=0.5, blur_prob=0.0),
        optim=OptimConfig(base_lr=2e-3, weight_decay=0.05, warmup_epochs=1),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    trainer.save_checkpoint(work / "pretrained.ckpt")
    return export(work / "pretrained.ckpt", work / "export")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="../shared/data/cifar10")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--lr", type=float, default=4e-3, help="base lr per 256 images, the same for every strategy"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfsup_ft_bench_"))
    backbone = pretrain(args.root, work)
    rows = {}
    for strategy in STRATEGIES:
        spec = {
            "backbone": str(backbone),
            "strategy": strategy,
            "root": args.root,
            "batch": args.batch_size,
            "steps": args.steps,
            "train": 4000,
            "val": 1000,
            "lr": args.lr,
        }
        result = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        rows[strategy] = json.loads(
            next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:]
        )
    print(
        f"\nViT-Tiny (4 blocks, 32 px, 8-px patches) short-SimCLR-pretrained, {args.steps} steps of {args.batch_size} "
        f"CIFAR-10 images (4,000-image subset), top-1 on 1,000 test images, CPU"
    )
    print(
        f"{'strategy':10s} {'trainable':>10s} {'share':>8s} {'step (ms)':>10s} {'peak fit RSS (MB)':>18s} {'added (MB)':>11s} {'top-1 %':>8s}"
    )
    for name, r in rows.items():
        print(
            f"{name:10s} {r['trainable']:>10,d} {100 * r['share']:7.2f}% {1000 * r['step_s']:10.0f} "
            f"{r['peak_fit_mb']:18.0f} {r['peak_fit_mb'] - r['rss_before_mb']:11.0f} {100 * r['top1']:8.2f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
