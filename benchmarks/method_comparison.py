"""Every pretraining method at equal CPU budgets on a CIFAR-10 subset, then kNN and a linear probe of
each (``selfsup.eval.probe``), with images/s and peak memory, side by side: the leaderboard. A small,
CPU-sized comparison of what a few minutes buy; no claim about long schedules.

The budget is **CPU seconds of the training process** (``time.process_time``) with one torch
thread, not wall-clock seconds: runs may then share the machine (``--jobs``) without costing any
method its budget. Each run is a process of its own, so its peak memory (``ru_maxrss``) is its own.
A method first times a few steps (after 2 warm-up steps) and is then given as many steps as fit in
the budget, so that its whole schedule (10 % linear warm-up, cosine decay, and for the EMA methods
the momentum's cosine to 1) runs to its end within the budget; a hard stop at the budget guards
against a low estimate.

Every method trains the same encoder (a ViT-Tiny at 32 px, ``--depth`` blocks, 8-px patches) on the
same images from the same seed (I-JEPA with 4-px patches: see PATCH_SIZE). Its recipe is its own small-scale config: ``configs/<method>/
vit_tiny_cifar10.yaml`` where there is one, else ``configs/<method>/digits.yaml`` without its
augmentation settings (the digits' are for grey digits; the method's paper views apply instead),
with the encoder replaced by the common one and the warm-up set to 10 % of the steps. Methods that
need captions (CLIP) are left out: they are compared by zero-shot accuracy elsewhere.

    python benchmarks/method_comparison.py --data ../shared/data/cifar10 --budgets 60 120 --seeds 0 1 \\
        --jobs 2 --out /tmp/leaderboard
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ["simclr", "mae", "dino", "mocov3", "dinov2", "ijepa", "byol", "swav", "vicreg", "barlow_twins"]
ENCODER_KEYS = ("encoder", "img_size", "patch_size", "encoder_kwargs", "init_from", "compile")
VIEW_KEYS = ("augment", "view", "view1", "view2", "views")
# I-JEPA's blocks (4 targets of 15-20 % and a context of 85-100 %, at least 10 patches each) need more
# than the 4 x 4 grid of 8-px patches at 32 px: it gets 4-px patches (an 8 x 8 grid), and pays for
# the 4x longer sequence out of the same budget
PATCH_SIZE = {"ijepa": 4}


def recipe(method: str) -> tuple[str, dict]:
    """The method's class path and constructor arguments from its small-scale config (see above)."""
    import yaml

    cifar = REPO / "configs" / method / "vit_tiny_cifar10.yaml"
    config = yaml.safe_load(
        (cifar if cifar.is_file() else REPO / "configs" / method / "digits.yaml").read_text()
    )
    model = config["model"]
    args = {k: v for k, v in (model.get("init_args") or {}).items() if k not in ENCODER_KEYS}
    if not cifar.is_file():
        args = {k: v for k, v in args.items() if k not in VIEW_KEYS}
    return model["class_path"], args


def build(method: str, depth: int, warmup_epochs: float):
    import importlib

    class_path, args = recipe(method)
    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    optim = dict(args.pop("optim", None) or {})
    optim["warmup_epochs"] = warmup_epochs
    return cls(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=PATCH_SIZE.get(method, 8),
        encoder_kwargs={"depth": depth},
        optim=optim,
        **args,
    )


def train_one(method: str, budget: float, seed: int, args, out: Path) -> dict:
    """One run, in this process: time the step, train for the budget, save the checkpoint."""
    import lightning as L
    import torch

    from selfsup import ImageDataModule

    torch.set_num_threads(1)
    data_args = {"source": "folder", "root": args.data, "image_size": 32, "train_subset": args.train_subset,
                 "val_subset": args.val_subset, "batch_size": args.batch_size, "num_workers": 1}  # fmt: skip
    times: list[float] = []

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx >= 2:
                times.append(time.process_time() - self.start)

    quiet = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
             "enable_model_summary": False}  # fmt: skip
    L.seed_everything(seed)
    L.Trainer(max_steps=7, callbacks=[Timer()], **quiet).fit(
        build(method, args.depth, 1.0), ImageDataModule(**data_args)
    )
    per_step = sorted(times)[len(times) // 2]
    steps = max(1, int(budget / per_step))
    per_epoch = args.train_subset // args.batch_size
    start = {}

    class Budget(L.Callback):
        def on_train_start(self, trainer, pl_module):
            if args.save_init:
                trainer.save_checkpoint(out / "init.ckpt")
            start["cpu"], start["wall"] = time.process_time(), time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if time.process_time() - start["cpu"] >= budget:
                trainer.should_stop = True

    L.seed_everything(seed)
    model = build(method, args.depth, warmup_epochs=0.1 * steps / per_epoch)
    trainer = L.Trainer(max_steps=steps, callbacks=[Budget()], **quiet)
    trainer.fit(model, ImageDataModule(**data_args))
    cpu, wall = time.process_time() - start["cpu"], time.perf_counter() - start["wall"]
    trainer.save_checkpoint(out / "last.ckpt")
    return {
        "method": method, "budget": budget, "seed": seed, "cpu_s_per_step": per_step, "planned_steps": steps,
        "steps": trainer.global_step, "train_cpu_s": cpu, "train_wall_s": wall,
        "images_per_s": trainer.global_step * args.batch_size / wall,
        "images_per_cpu_s": trainer.global_step * args.batch_size / cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checkpoint": str(out / "last.ckpt"),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data/cifar10")
    parser.add_argument(
        "--budgets", type=float, nargs="+", default=[60.0, 120.0], help="CPU seconds of training"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--train_subset", type=int, default=5000)
    parser.add_argument("--val_subset", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each one torch thread)")
    parser.add_argument("--out", default="/tmp/method_comparison")
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "BUDGET", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--save_init", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.one:
        method, budget, seed = args.one[0], float(args.one[1]), int(args.one[2])
        run_dir = out / f"{method}_b{budget:g}_s{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text(
            json.dumps(train_one(method, budget, seed, args, run_dir), indent=2)
        )
        return
    runs = [(m, b, s) for s in args.seeds for b in args.budgets for m in args.methods]
    common = ["--data", args.data, "--train_subset", str(args.train_subset), "--val_subset", str(args.val_subset),
              "--depth", str(args.depth), "--batch_size", str(args.batch_size), "--out", str(out)]  # fmt: skip
    pending, running = list(runs), []
    while pending or running:
        while pending and len(running) < args.jobs:
            m, b, s = pending.pop(0)
            extra = ["--save_init"] if (m, b, s) == runs[0] else []
            done = out / f"{m}_b{b:g}_s{s}" / "run.json"
            if done.is_file():
                continue
            print(f"start {m} budget {b:g} seed {s}", flush=True)
            cmd = [sys.executable, __file__, "--one", m, str(b), str(s), *common, *extra]
            running.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            )
        for proc in list(running):
            if proc.poll() is not None:
                running.remove(proc)
                if proc.returncode:
                    print(f"FAILED {proc.args[3:6]}: {proc.stderr.read()[-2000:]}", flush=True)
        time.sleep(2)
    report(args, out, runs)


def report(args, out: Path, runs: list) -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from selfsup.eval.probe import probe

    torch.set_num_threads(2)
    done = [json.loads((out / f"{m}_b{b:g}_s{s}" / "run.json").read_text())
            for m, b, s in runs if (out / f"{m}_b{b:g}_s{s}" / "run.json").is_file()]  # fmt: skip
    checkpoints = [
        out / f"{runs[0][0]}_b{runs[0][1]:g}_s{runs[0][2]}" / "init.ckpt",
        *(d["checkpoint"] for d in done),
    ]
    data = {"source": "folder", "root": args.data, "image_size": 32, "train_subset": args.train_subset,
            "val_subset": args.val_subset}  # fmt: skip
    results = probe(checkpoints, data=data, out=out / "probe", cache_dir=out / "cache", device="cpu")
    by_path = {str(Path(c).resolve()): r for r in results for c in r.checkpoints}
    init = by_path[str(checkpoints[0].resolve())]
    for d in done:
        result = by_path[str(Path(d["checkpoint"]).resolve())]
        d["knn20"], d["linear_top1"] = result.knn_top1[20], result.linear_top1
    (out / "leaderboard.json").write_text(json.dumps({"init": {"knn20": init.knn_top1[20],
        "linear_top1": init.linear_top1}, "runs": done}, indent=2))  # fmt: skip
    table = Table(title=f"CIFAR-10 {args.train_subset} / {args.val_subset} images at 32 px, ViT-Tiny {args.depth} "
                  f"blocks; mean over seeds {args.seeds}; random init kNN {100 * init.knn_top1[20]:.1f} / linear "
                  f"{100 * init.linear_top1:.1f}")  # fmt: skip
    for column in (
        "method",
        "CPU-s budget",
        "steps",
        "kNN@20 %",
        "linear top-1 %",
        "images/s",
        "images/CPU-s",
        "peak MiB",
    ):
        table.add_column(column, justify="right")
    rows = {}
    for d in done:
        rows.setdefault((d["method"], d["budget"]), []).append(d)
    for (method, budget), group in sorted(rows.items(), key=lambda item: (item[0][1], item[0][0])):

        def mean(key, group=group):
            return sum(g[key] for g in group) / len(group)

        def spread(key, group=group):
            values = [100 * g[key] for g in group]
            return " / ".join(f"{v:.1f}" for v in values)

        table.add_row(method, f"{budget:g}", f"{mean('steps'):.0f}", f"{100 * mean('knn20'):.1f} ({spread('knn20')})",
                      f"{100 * mean('linear_top1'):.1f} ({spread('linear_top1')})", f"{mean('images_per_s'):.0f}",
                      f"{mean('images_per_cpu_s'):.0f}", f"{mean('peak_rss_mib'):.0f}")  # fmt: skip
    Console(width=160).print(table)
    plot(done, init, out / "leaderboard.png")


def plot(done: list[dict], init, path: Path) -> None:
    """kNN and linear top-1 against the CPU budget, one line per method (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    methods = sorted({d["method"] for d in done})
    for ax, key, baseline, title in ((axes[0], "knn20", init.knn_top1[20], "kNN@20 top-1 %"),
                                     (axes[1], "linear_top1", init.linear_top1, "linear probe top-1 %")):  # fmt: skip
        for method in methods:
            budgets = sorted({d["budget"] for d in done if d["method"] == method})
            means = [100 * sum(d[key] for d in done if d["method"] == method and d["budget"] == b)
                     / len([d for d in done if d["method"] == method and d["budget"] == b]) for b in budgets]  # fmt: skip
            ax.plot(budgets, means, marker="o", label=method)
        ax.axhline(100 * baseline, color="grey", linestyle="--", label="random init")
        ax.set_title(title)
        ax.set_xlabel("training budget, CPU seconds")
    axes[1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
