"""What collapses DINO on the digits, measured: ``configs/dino/digits.yaml`` (or ``--config``: any
method's digits recipe; the entropy only where the method logs one) run as a user runs it
(``selfsup fit -c``) under a set of overrides, two runs at a time, each in its own process with one
thread. For each setting it records the ``train/teacher_entropy`` curve (logged every 5 steps), the
kNN top-1 of the teacher on the held-out digits every ``--knn_every`` epochs (``KNNMonitor``, added on
the command line), the final ``KNNReport`` figures and the mean cosine between the trained teacher's
features of every two held-out digits (1: every digit maps to one point), then plots both curves for every setting
(``--plot``) and prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/dino_digits_sweep.py --out /tmp/dino_sweep \\
        --plot docs/dino_digits_sweep.png \\
        --setting "shipped=" \\
        --setting "bn head=--model.init_args.use_bn_in_head true"

A setting is ``label=overrides``: the overrides are ``selfsup fit`` arguments, split on spaces.
``--collect A/sweep.json B/sweep.json --only LABEL ...`` tables and plots chosen runs of earlier sweeps
together.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def run_folder(out: Path, label: str) -> Path:
    """A setting's folder under the sweep's: its label with every other character than letters and
    digits replaced by ``_``."""
    return out / "".join(c if c.isalnum() else "_" for c in label)


def run(config: Path, label: str, overrides: list[str], out: Path, knn_every: int) -> dict:
    save_dir = run_folder(out, label)
    command = [
        sys.executable, "-m", "selfsup", "fit", "-c", str(config),
        "--trainer.logger.init_args.save_dir", str(save_dir),
        "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks+=selfsup.eval.KNNMonitor",
        "--trainer.callbacks.every_n_epochs", str(knn_every),
        *overrides,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "run.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:  # one bad setting costs its own row, not the sweep's other runs
        print(
            f"{label} failed (exit {result.returncode}); its output is in {save_dir / 'run.log'}.", flush=True
        )
        return {"label": label, "overrides": " ".join(overrides), "failed": str(save_dir / "run.log")}
    return summarise(save_dir, label, overrides, wall, warned="TeacherCollapseWarning" in result.stderr)


def summarise(save_dir: Path, label: str, overrides: list[str], wall: float, warned: bool) -> dict:
    """The row of a finished run, read from its newest ``version_*`` folder under ``save_dir``."""
    folder = max(save_dir.glob("*/version_*"), key=lambda p: p.stat().st_mtime)
    knn = json.loads((folder / "knn_report.json").read_text())
    entropy, knn_curve = [], []
    with (folder / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if row.get("train/teacher_entropy"):
                entropy.append((int(row["step"]), float(row["train/teacher_entropy"])))
            if row.get("val/knn_top1"):
                knn_curve.append((int(row["epoch"]) + 1, 100 * float(row["val/knn_top1"])))
    # the run's own record of its arguments (the config plus the overrides)
    model_args = yaml.safe_load((folder / "config.yaml").read_text())["model"].get("init_args") or {}
    out_dim = model_args.get("out_dim")
    return {
        "label": label,
        "overrides": " ".join(overrides),
        "init": 100 * knn["top1_init"],
        "trained": 100 * knn["top1_trained"],
        "steps": knn["steps"],
        "entropy": entropy,
        "knn": [(0, 100 * knn["top1_init"]), *knn_curve],
        "max_entropy": math.log(out_dim) if out_dim else None,
        "warned": warned,
        "wall": wall,
        "cosine": class_token_cosine(folder),
    }


def class_token_cosine(folder: Path) -> float:
    """Mean cosine similarity between the exported teacher's features (its checkpoint's pooling) of
    every two held-out digits, from ``last.ckpt``: 1 when all digits map to one point."""
    import torch
    import torch.nn.functional as F

    from selfsup import ImageDataModule
    from selfsup.load import load_encoder

    encoder = load_encoder(str(folder / "checkpoints" / "last.ckpt"))
    data = ImageDataModule("digits", image_size=16, batch_size=512, num_workers=0)
    data.setup()
    images, _ = next(iter(data.eval_dataloader("val")))
    mean = torch.tensor(encoder.pretrained_cfg["mean"]).view(1, 3, 1, 1) * 255  # the checkpoint's
    std = torch.tensor(encoder.pretrained_cfg["std"]).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        z = F.normalize(encoder((images.float() - mean) / std), dim=-1)
    n = len(z)
    return float(((z @ z.T).sum() - n) / (n * n - n))


def table(rows: list[dict]) -> str:
    lines = [
        "| setting | overrides | steps | entropy: lowest / final / log K | kNN % init → best → final | feature cosine | wall |",
        "|---|---|---:|---|---|---:|---:|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(
                f"| {r['label']} | `{r['overrides'] or '(none)'}` | failed: see {r['failed']} | | | | |"
            )
            continue
        values = [e for _, e in r["entropy"]]
        best = max(k for _, k in r["knn"])
        entropy = (
            f"{min(values):.3f} / {values[-1]:.3f} / {r['max_entropy']:.3f}" if values else "(none logged)"
        )
        lines.append(
            f"| {r['label']} | `{r['overrides'] or '(none)'}` | {r['steps']} | {entropy} | "
            f"{r['init']:.2f} → {best:.2f} → {r['trained']:.2f} | "
            f"{r['cosine']:.3f} | {r['wall'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_k) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in rows:
        if "failed" in r:
            continue
        if r["entropy"]:
            steps, values = zip(*r["entropy"], strict=True)
            ax_e.plot(steps, [v / r["max_entropy"] for v in values], label=r["label"])
        epochs, knn = zip(*r["knn"], strict=True)
        ax_k.plot(epochs, knn, marker="o", label=r["label"])
    ax_e.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    ax_e.set(xlabel="step", ylabel="teacher entropy / log K", title="teacher entropy (1 = uniform teacher)")
    ax_k.set(xlabel="epoch", ylabel="kNN top-1 % (held-out digits)", title="teacher kNN")
    ax_k.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/dino/digits.yaml")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dino_sweep"))
    parser.add_argument("--setting", action="append", default=[], help="label=overrides")
    parser.add_argument(
        "--collect",
        type=Path,
        nargs="*",
        default=[],
        help="instead of running: the sweep.json of earlier sweeps, tabled and plotted together",
    )
    parser.add_argument("--only", nargs="*", default=None, help="with --collect: these labels, in this order")
    parser.add_argument("--knn_every", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    if args.collect:
        rows = []
        for path in args.collect:
            for row in json.loads(path.read_text()):
                if "cosine" not in row:  # a sweep from before the column: its run folder beside the json
                    row["cosine"] = class_token_cosine(
                        next(run_folder(path.parent, row["label"]).glob("*/version_*"))
                    )
                rows.append(row)
        if args.only:
            by_label = {row["label"]: row for row in rows}
            rows = [by_label[label] for label in args.only]
        print(table(rows))
        if args.plot:
            plot(rows, args.plot)
        return
    settings = [(s.split("=", 1)[0], shlex.split(s.split("=", 1)[1])) for s in args.setting]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run, args.config, label, o, args.out, args.knn_every) for label, o in settings]
        rows = []
        for future in futures:
            rows.append(future.result())
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=1))
    print()
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
        print(f"curves: {args.plot}")


if __name__ == "__main__":
    main()
