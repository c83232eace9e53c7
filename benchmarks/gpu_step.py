"""One training step of each method, timed the way a GPU sees it: images/s, model FLOPs utilisation,
the augmentation's share of the step, host syncs per step, eager against compiled.

    # on a GPU (the issue's cases: SimCLR ViT-S/16, MAE ViT-B/16, DINO ViT-S/16 multi-crop, MoCo v3)
    python benchmarks/gpu_step.py --device cuda
    # on a CPU (no MFU): ViT-Tiny/4 at 32 px and ViT-S/16 at 224 px, batch 16
    python benchmarks/gpu_step.py --device cpu --cases tiny32 small224 --methods simclr mae --steps 5

Each step is what ``training_step`` + ``optimizer_step`` do in a run: the batch's uint8 images go
through the method's declared augmentation (on the device), the forward and loss (bf16 autocast on
GPUs), backward, the non-finite guard and the fused AdamW update (and the EMA teachers). Data are
synthetic uint8 images (``--folder`` reads a real ImageFolder instead), so the loader is not
measured here (see benchmarks/decode_throughput.py).

- images/s: batch / median step time, after ``--warmup`` steps (and after compilation).
- MFU: FLOPs of one step (``torch.utils.flop_counter``: forward + backward, multiply-adds x 2) per
  second over the GPU's dense bf16 peak (``--peak-tflops``, default from the device name).
- augmentation share: CUDA events around the augmentation and the whole step (``time.perf_counter``
  on a CPU).
- host syncs: ``torch.cuda.set_sync_debug_mode("warn")`` during the timed steps, warnings counted
  (CUDA only; the CPU test suite counts host reads instead, tests/test_module.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup import DINO, MAE, MoCoV3, SimCLR  # noqa: E402
from selfsup.optim import OptimConfig, build_optimizer, param_groups  # noqa: E402

# name -> (timm encoder, image size, patch size, batch per device)
CASES = {
    "tiny32": ("vit_tiny_patch16_224", 32, 4, 64),
    "small224": ("vit_small_patch16_224", 224, 16, 16),
    "gpu": (None, 224, 16, None),  # the GPU cases, per method below
}
GPU_CASES = {  # method -> (encoder, batch per GPU)
    "simclr": ("vit_small_patch16_224", 256),
    "mae": ("vit_base_patch16_224", 256),
    "dino": ("vit_small_patch16_224", 64),
    "mocov3": ("vit_small_patch16_224", 256),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def build(method: str, encoder: str, size: int, patch: int):
    common = {"img_size": size, "patch_size": patch}
    if method == "simclr":
        return SimCLR(encoder, **common, projection_layers=3, projection_hidden_dim=4096, projection_dim=256)
    if method == "mae":
        return MAE(encoder, **common)
    if method == "dino":
        local = 10 if size >= 224 else 6
        return DINO(encoder, **common, out_dim=65536 if size >= 224 else 4096, augment={"local_crops": local})
    if method == "mocov3":
        return MoCoV3(encoder, **common)
    raise ValueError(method)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start, end) -> float:
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1000
        return end - start


def step_function(model, optimizer, device, precision: str):
    labels = torch.zeros(1, dtype=torch.long, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    step = {"n": 0}

    def run(images: torch.Tensor, timer: Timer | None = None):
        marks = [timer.mark()] if timer else []
        views = model.augment(images)
        if timer:
            marks.append(timer.mark())
        with autocast:
            out = model.training_step((views, labels.expand(len(images))), step["n"])
        loss = out["loss"] if isinstance(out, dict) else out
        loss.backward()
        model.nonfinite_guard.check(loss, optimizer, step["n"], 0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if model._teachers:
            model.update_teachers(step["n"])
        step["n"] += 1
        if timer:
            marks.append(timer.mark())
        return marks

    return run


def count_flops(run, images) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run(images)
    return counter.get_total_flops()


def measure(method, case, device, args, compiled: bool) -> dict:
    encoder, size, patch, batch = CASES[case]
    if case == "gpu":
        encoder, batch = GPU_CASES[method]
    batch = args.batch_size or batch
    torch.manual_seed(0)
    model = build(method, encoder, size, patch).to(device)
    model.log = lambda *a, **k: None  # no trainer here: logging is Lightning's
    model.train()
    model.total_steps = 10_000
    model._view_dtype = torch.bfloat16 if args.precision == "bf16-mixed" and method != "mae" else None
    if compiled:
        model.compile_modules()
    model.setup("fit")
    optimizer = build_optimizer(
        OptimConfig(), param_groups(model, 0.05, model.no_weight_decay_names()), 1e-4, device
    )
    run = step_function(model, optimizer, device, args.precision)
    if args.folder:
        from selfsup.data import ImageDataModule

        data = ImageDataModule("folder", args.folder, image_size=size, batch_size=batch, num_workers=4)
        images = next(iter(data.train_dataloader()))[0].to(device)
    else:
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    for _ in range(args.warmup):
        run(images)
    flops = count_flops(run, images)
    timer = Timer(device)
    times, aug = [], []
    syncs = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        for _ in range(args.steps):
            start, after_aug, end = run(images, timer)
            times.append(timer.seconds(start, end))
            aug.append(timer.seconds(start, after_aug))
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
            syncs = sum("synchroniz" in str(w.message) for w in caught)
    step_time = statistics.median(times)
    peak = peak_tflops(device, args.peak_tflops)
    return {
        "method": method,
        "case": f"{encoder.replace('_patch16_224', '')}/{patch} {size}px b{batch}",
        "mode": "compiled" if compiled else "eager",
        "step_ms": 1000 * step_time,
        "images_s": batch / step_time,
        "aug_share": statistics.median(aug) / step_time,
        "tflops": flops / step_time / 1e12,
        "mfu": (flops / step_time / 1e12 / peak) if peak else None,
        "syncs_per_step": syncs / args.steps if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", nargs="+", default=["simclr", "mae", "dino", "mocov3"])
    parser.add_argument("--cases", nargs="+", default=None, help=f"of {list(CASES)} (default: gpu on CUDA)")
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"])
    parser.add_argument("--precision", default=None, help="bf16-mixed (default on CUDA) or 32-true")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--folder", default=None, help="an ImageFolder to take one real batch from")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))  # fmt: skip
    args.precision = args.precision or ("bf16-mixed" if device.type == "cuda" else "32-true")
    cases = args.cases or (["gpu"] if device.type == "cuda" else ["tiny32"])
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}; precision {args.precision}; torch {torch.__version__}; {args.steps} timed steps")
    header = f"{'method':<8} {'case':<26} {'mode':<9} {'ms/step':>9} {'img/s':>9} {'aug %':>6} {'TFLOP/s':>8} {'MFU':>6} {'syncs':>6}"
    print(header)
    rows = []
    for case in cases:
        for method in args.methods:
            for mode in args.modes:
                r = measure(method, case, device, args, compiled=mode == "compiled")
                rows.append(r)
                mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
                syncs = f"{r['syncs_per_step']:.1f}" if r["syncs_per_step"] is not None else "-"
                print(f"{r['method']:<8} {r['case']:<26} {r['mode']:<9} {r['step_ms']:>9.1f} {r['images_s']:>9.1f} "
                      f"{100 * r['aug_share']:>5.1f}% {r['tflops']:>8.3f} {mfu:>6} {syncs:>6}", flush=True)  # fmt: skip
    by_key: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["method"], r["case"]), {})[r["mode"]] = r
    for (method, case), pair in by_key.items():
        if {"eager", "compiled"} <= pair.keys():
            ratio = pair["eager"]["step_ms"] / pair["compiled"]["step_ms"]
            print(f"{method} {case}: compiled step time = eager / {ratio:.2f}")


if __name__ == "__main__":
    main()
