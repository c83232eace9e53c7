"""DINO loss, forward + backward: selfsup's grouped form against the reference's loop over crop pairs,
side by side in one process.

The reference (facebookresearch/dino ``main_dino.py``) takes one ``[B, K]`` product per pair of a
teacher global crop and a student crop, ``2 * (n_crops - 1)`` of them; ``selfsup.losses.dino.DINOLoss``
sums the student's log-probabilities over crops once and takes 2 products (same value, tested). Both
are timed interleaved in rounds (forward + backward to the student logits); the median of each and
their ratio are printed, with the largest difference of the two losses.

    python benchmarks/dino_loss.py                                   # CPU, K = 65536, B = 32, 2 + 6 crops
    python benchmarks/dino_loss.py --device cuda --batch-size 128 --local-crops 10
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from selfsup.losses.dino import DINOLoss


def pair_loop_loss(
    student: torch.Tensor, teacher: torch.Tensor, center, tau_s: float, tau_t: float, n_crops: int
):
    """The reference's computation: one cross-entropy per (teacher crop, other student crop) pair."""
    student_crops = (student / tau_s).chunk(n_crops)
    teacher_crops = F.softmax((teacher - center) / tau_t, dim=-1).detach().chunk(2)
    total, terms = 0.0, 0
    for i, p in enumerate(teacher_crops):
        for v, s in enumerate(student_crops):
            if v != i:
                total = total + torch.sum(-p * F.log_softmax(s, dim=-1), dim=-1).mean()
                terms += 1
    return total / terms


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dim", type=int, default=65536)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--local-crops", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    n_crops = 2 + args.local_crops
    student = torch.randn(n_crops * args.batch_size, args.out_dim, device=device, requires_grad=True)
    teacher = torch.randn(2 * args.batch_size, args.out_dim, device=device)
    loss_fn = DINOLoss(args.out_dim).to(device)
    loss_fn.center.normal_()

    def grouped():
        return loss_fn(student, teacher, 0.04)

    def pairs():
        return pair_loop_loss(student, teacher, loss_fn.center, 0.1, 0.04, n_crops)

    cases = {"selfsup grouped": grouped, "reference pair loop": pairs}
    difference = (grouped() - pairs()).abs().item()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(args.rounds + 2):
        for name, fn in cases.items():
            student.grad = None
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ >= 2:  # 2 warm-up rounds
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "out_dim": args.out_dim,
        "batch_size": args.batch_size,
        "crops": f"2 + {args.local_crops}",
        "median_ms": {k: round(v, 2) for k, v in medians.items()},
        "pair_loop / grouped": round(medians["reference pair loop"] / medians["selfsup grouped"], 2),
        "max_abs_loss_difference": difference,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
