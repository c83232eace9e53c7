"""DINOv2's training step against DINO's and SimCLR's on the same encoder and batch, side by side in
one process: the methods take turns step by step (so a busy machine slows all three alike), and the
median of each method's step times is reported, with the share of DINOv2's step spent drawing the
block masks on the CPU.

    python benchmarks/dinov2_step.py                       # ViT-Tiny/4 at 32 px, batch 32, 2 + 6 crops
    python benchmarks/dinov2_step.py --device cuda --encoder vit_small_patch16_224 --size 224 --patch 16 \
        --batch 64 --local-crops 8 --out-dim 65536

A step is what ``training_step`` + ``optimizer_step`` do in a run: the uint8 batch through the
method's augmentation (on the device), forward, loss, backward, fused AdamW and the EMA teachers
(no gradient clipping, for any method).
DINO and DINOv2 get the same crops (2 global + ``--local-crops`` local) and the same head
(``--out-dim`` prototypes, shared by DINOv2's class and patch tokens); SimCLR gets its 2 views.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup import DINO, SimCLR  # noqa: E402
from selfsup.encoders.block_masking import ibot_masks  # noqa: E402
from selfsup.methods.dinov2 import DINOv2  # noqa: E402
from selfsup.optim import OptimConfig, build_optimizer, param_groups  # noqa: E402


def build(method: str, args) -> torch.nn.Module:
    common = {"img_size": args.size, "patch_size": args.patch, "encoder_kwargs": {"depth": args.depth}}
    head = {"out_dim": args.out_dim, "hidden_dim": 2048, "bottleneck_dim": 256}
    crops = {"local_crops": args.local_crops}
    if method == "simclr":
        return SimCLR(
            args.encoder, **common, projection_layers=3, projection_hidden_dim=2048, projection_dim=256
        )
    if method == "dino":
        return DINO(args.encoder, **common, **head, augment=crops)
    return DINOv2(args.encoder, **common, **head, augment={**crops, "global_scale": (0.4, 1.0),
                                                          "local_scale": (0.05, 0.4)})  # fmt: skip


def stepper(model, device: torch.device):
    model.log = lambda *a, **k: None  # no trainer here: logging is Lightning's
    model.to(device).train()
    model.total_steps = 10_000
    model.setup("fit")
    groups = param_groups(model, 0.05, model.no_weight_decay_names())
    optimizer = build_optimizer(OptimConfig(), groups, 1e-4, device)
    labels = torch.zeros(1, dtype=torch.long, device=device)
    count = {"n": 0}

    def step(images: torch.Tensor) -> None:
        views = model.augment(images)
        out = model.training_step((views, labels.expand(len(images))), count["n"])
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if model._teachers:
            model.update_teachers(count["n"])
        count["n"] += 1

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="vit_tiny_patch16_224")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--local-crops", type=int, default=6)
    parser.add_argument("--out-dim", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    methods = ["simclr", "dino", "dinov2"]
    steps = {m: stepper(build(m, args), device) for m in methods}
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, device=device)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for i in range(args.warmup + args.steps):
        for m in methods:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            steps[m](images)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[m].append(time.perf_counter() - start)
    grid = (args.size // args.patch, args.size // args.patch)
    start = time.perf_counter()
    for _ in range(args.steps):
        ibot_masks(2 * args.batch, grid)
    masks_ms = 1000 * (time.perf_counter() - start) / args.steps
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}; torch {torch.__version__}; {args.encoder} depth {args.depth}, /{args.patch} at "
          f"{args.size} px, batch {args.batch}, 2 + {args.local_crops} crops (DINO, DINOv2), {args.out_dim} "
          f"prototypes; median of {args.steps} interleaved steps")  # fmt: skip
    print(f"{'method':<8} {'ms/step':>9} {'img/s':>8} {'x SimCLR':>9}")
    base = statistics.median(times["simclr"])
    for m in methods:
        t = statistics.median(times[m])
        print(f"{m:<8} {1000 * t:9.1f} {args.batch / t:8.1f} {t / base:9.2f}")
    share = masks_ms / (1000 * statistics.median(times["dinov2"]))
    print(f"DINOv2's block masks for {2 * args.batch} global crops ({grid[0]}x{grid[1]} patches): "
          f"{masks_ms:.2f} ms on the CPU ({100 * share:.1f} % of its step)")  # fmt: skip


if __name__ == "__main__":
    main()
