"""DDP scaling on CPU processes: 1 process vs 2 processes with the same per-process batch, for
SimCLR (InfoNCE gathered across processes) and MAE, side by side in one run.

Each configuration is a ``selfsup fit`` run of the real CLI (Lightning's DDP launcher for 2
processes) on the digits at 32 px with a 4-block ViT-Tiny (4-px patches); a callback times the
training steps after a warm-up. Images/s counts the global batch. Scaling efficiency =
throughput(2 processes) / (2 x throughput(1 process)), both with one thread per process, so that
each process gets one core, as on a machine with one GPU per process.

    python benchmarks/ddp_scaling.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TIMER = """
import json, os, statistics, time
from lightning.pytorch.callbacks import Callback

class StepTimer(Callback):
    def __init__(self, warmup: int = 3, out: str = "timing.json") -> None:
        self.warmup, self.out, self.times, self.start = warmup, out, [], None
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start = time.perf_counter()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self.start)
    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            json.dump({"median_step_s": statistics.median(self.times), "steps": len(self.times),
                       "world_size": trainer.world_size}, open(self.out, "w"))
"""


def run(method: str, processes: int, threads: int, batch: int, steps: int, work: Path) -> dict:
    folder = work / f"{method}_{processes}x{threads}"
    folder.mkdir(parents=True)
    (folder / "steptimer.py").write_text(TIMER)
    extra = "\n    projection_hidden_dim: 512" if method == "simclr" else ""
    (folder / "config.yaml").write_text(f"""
seed_everything: 0
trainer:
  accelerator: cpu
  devices: {processes}
  strategy: {"ddp" if processes > 1 else "auto"}
  max_steps: {steps}
  enable_progress_bar: false
  logger: false
  callbacks: [{{class_path: steptimer.StepTimer}}]
model:
  class_path: selfsup.{"SimCLR" if method == "simclr" else "MAE"}
  init_args:
    encoder: vit_tiny_patch16_224
    patch_size: 4
    encoder_kwargs: {{depth: 4}}{extra}
data:
  class_path: selfsup.ImageDataModule
  init_args: {{source: digits, image_size: 32, batch_size: {batch}, num_workers: 0}}
""")
    command = [sys.executable, "-m", "selfsup", "fit", "-c", "config.yaml"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": f"{folder}:{os.environ.get('PYTHONPATH', '')}",
    }
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    timing = json.loads((folder / "timing.json").read_text())
    timing["images_per_s"] = batch * processes / timing["median_step_s"]
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfsup_ddp_bench_"))
    results = {}
    print(f"per-process batch {args.batch_size}, {args.steps} steps (median step after 3 warm-up steps)")
    for method in ("simclr", "mae"):
        one = run(method, 1, 1, args.batch_size, args.steps, work)
        one_two_threads = run(method, 1, 2, args.batch_size, args.steps, work)
        two = run(method, 2, 1, args.batch_size, args.steps, work)
        efficiency = two["images_per_s"] / (2 * one["images_per_s"])
        results[method] = {
            "1 process x 1 thread": one,
            "1 process x 2 threads": one_two_threads,
            "2 processes x 1 thread": two,
            "scaling_efficiency": efficiency,
        }
        print(
            f"{method}: 1 process x 1 thread {one['images_per_s']:.1f} images/s | 1 process x 2 threads "
            f"{one_two_threads['images_per_s']:.1f} | 2 processes x 1 thread (DDP) {two['images_per_s']:.1f} | "
            f"scaling efficiency {efficiency:.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
