"""MAE step time against SimCLR and against itself, side by side in one process.

For each encoder: one training step (augmentation, forward, backward, AdamW step) on the same uint8
batch for
  - SimCLR (two views through the encoder),
  - MAE at mask ratio 0.75 with the default decoder for that encoder,
  - MAE at mask ratio 0.0 (every patch through the encoder: what visible-only encoding saves),
  - MAE at 0.75 with the paper's 8 x 512 decoder (why the default decoder scales with the encoder).
Timings are interleaved in rounds; the median step of each is reported with ratios.

    python benchmarks/mae_step_time.py                      # ViT-Ti/4 at 32 px and ViT-S/16 at 224 px, CPU
    python benchmarks/mae_step_time.py --cases base224 --precision bf16 --batch-size 128   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext

import torch

from selfsup import MAE, SimCLR

CASES = {
    "tiny32": dict(encoder="vit_tiny_patch16_224", img_size=32, patch_size=4, batch=64),
    "small224": dict(encoder="vit_small_patch16_224", img_size=224, patch_size=16, batch=16),
    "base224": dict(encoder="vit_base_patch16_224", img_size=224, patch_size=16, batch=16),
}


def make_step(model, device, precision):
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step(images):
        views = model.augment(images)
        with autocast:
            if isinstance(model, SimCLR):
                z1, z2 = model(torch.cat(views)).chunk(2)
                loss = model.criterion(z1, z2)
            else:
                loss = model.criterion(*model(views))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def flops_per_image(model, images, device) -> float:
    """Training FLOPs per image (forward + backward) counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.to(device)
    views = model.augment(images[:2])
    with FlopCounterMode(display=False) as counter:
        if isinstance(model, SimCLR):
            z1, z2 = model(torch.cat(views)).chunk(2)
            loss = model.criterion(z1, z2)
        else:
            loss = model.criterion(*model(views))
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=["tiny32", "small224"], choices=list(CASES))
    parser.add_argument("--batch-size", type=int, default=0, help="override each case's batch")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="the device's peak (e.g. 989 for H100 bf16 dense) to report model FLOPs utilisation",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"device {device.type} ({torch.cuda.get_device_name() if device.type == 'cuda' else platform.machine()}, "
        f"{torch.get_num_threads()} threads), precision {args.precision}"
    )
    results = {}
    for case in args.cases:
        spec = CASES[case]
        batch = args.batch_size or spec["batch"]
        common = dict(encoder=spec["encoder"], img_size=spec["img_size"], patch_size=spec["patch_size"])
        models = {
            "simclr": SimCLR(**common),
            "mae_0.75": MAE(**common),
            "mae_0.0": MAE(**common),
            "mae_0.75_paper_decoder": MAE(**common, decoder_dim=512, decoder_depth=8, decoder_heads=16),
        }
        # mask ratio 0 (every patch visible) is a measurement setting, not a training one: MAE refuses
        # it at construction, so set it after.
        models["mae_0.0"].mask_ratio = 0.0
        images = torch.randint(
            0, 256, (batch, 3, spec["img_size"], spec["img_size"]), dtype=torch.uint8, device=device
        )
        flops = {name: flops_per_image(m, images, device) for name, m in models.items()}
        steps = {name: make_step(m, device, args.precision) for name, m in models.items()}
        for step in steps.values():
            step(images)  # warm-up
        times = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                for _ in range(args.steps):
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    step(images)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t) for name, t in times.items()}
        decoder = models["mae_0.75"].decoder
        print(
            f"\n{case}: {spec['encoder']} at {spec['img_size']} px, patch {spec['patch_size']}, batch {batch}; "
            f"default MAE decoder {len(decoder.blocks)} x {decoder.embed.out_features}"
        )
        for name, t in median.items():
            mfu = ""
            if args.peak_tflops:
                mfu = f"  MFU {100 * flops[name] * batch / t / (args.peak_tflops * 1e12):5.1f}%"
            print(
                f"  {name:24s} {1000 * t:9.1f} ms/step  {batch / t:9.1f} images/s  "
                f"{flops[name] / 1e9:8.2f} GFLOP/image{mfu}"
            )
        ratios = {
            "mae_over_simclr": median["mae_0.75"] / median["simclr"],
            "mae_0.75_over_0.0": median["mae_0.75"] / median["mae_0.0"],
            "paper_decoder_over_default": median["mae_0.75_paper_decoder"] / median["mae_0.75"],
        }
        for name, value in ratios.items():
            print(f"  ratio {name:28s} {value:.2f}")
        results[case] = {
            "ms_per_step": {k: 1000 * v for k, v in median.items()},
            "ratios": ratios,
            "gflop_per_image": {k: v / 1e9 for k, v in flops.items()},
            "batch": batch,
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
