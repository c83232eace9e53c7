"""SimCLR's two-view augmentation alone, side by side in one process, in interleaved rounds:

- ``kornia``: selfsup's previous pipeline (Kornia augmentation modules on the whole batch; a copy of
  its ``simclr_view`` is kept below for this comparison);
- ``batched``: selfsup's batched op (``selfsup.augment``: parameters drawn on the CPU, a fixed
  number of batched ops per view);
- ``tv2_uint8`` / ``tv2_pil``: torchvision transforms v2 per image, on uint8 tensors and on PIL
  images (what DataLoader workers would do), always on the CPU.

All make the same views: random resized crop (0.08-1), flip, colour jitter (0.8, 0.8, 0.8, 0.2;
p=0.8), grayscale (p=0.2), Gaussian blur (p=0.5, kernel 10% of the side; only at >= 64 px),
normalise. Rates are images/s (two views per image) for one process; medians over rounds.
``--multicrop`` adds DINO's views (2 x 224-px global, 8 x 96-px local) with the batched op;
``--alternatives`` times the design choices of the batched op against the alternatives: crop by
``grid_sample`` vs resampling matrices, the per-sample jitter order by hue groups vs evaluating
every operation with masks, and (CPU) blur by banded matmuls vs grouped convolution.

    python benchmarks/augment_throughput.py --sizes 32 224 --batch-size 256 --multicrop --alternatives
    python benchmarks/augment_throughput.py --device cuda --sizes 224 --batch-size 256 --multicrop

On CUDA the batched pipelines are timed with CUDA events; the per-image torchvision rates stay CPU
rates (one process).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import kornia.augmentation as K
import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from selfsup.augment import MultiViewAugment, Normalize, SimCLRAugment, SimCLRViewConfig, ViewConfig
from selfsup.augment.batched import as_float
from selfsup.augment.blur import blur, blur_matmul, gaussian_kernels
from selfsup.augment.color import GRAY_WEIGHTS, adjust_hue_, linear_round, round_matrices
from selfsup.augment.params import HUE, sample_view_params
from selfsup.augment.resample import matrix_resample, sample_coordinates

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --- the previous pipeline (selfsup.augment.simclr before the batched op), kept for comparison ---


def kornia_simclr_view(size: int, config: SimCLRViewConfig) -> nn.Sequential:
    s = config.jitter_strength
    ops: list[nn.Module] = [
        K.RandomResizedCrop((size, size), scale=config.crop_scale, ratio=config.crop_ratio),
        K.RandomHorizontalFlip(p=config.hflip_prob),
    ]
    if config.jitter_prob > 0 and s > 0:
        ops.append(K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=config.jitter_prob))
    if config.grayscale_prob > 0:
        ops.append(K.RandomGrayscale(p=config.grayscale_prob))
    if config.blur_prob > 0 and size >= config.blur_min_size:
        kernel = int(0.1 * size) // 2 * 2 + 1
        ops.append(K.RandomGaussianBlur(kernel, config.blur_sigma, p=config.blur_prob))
    return nn.Sequential(*ops)


class KorniaSimCLR(nn.Module):
    def __init__(self, size: int, config: SimCLRViewConfig) -> None:
        super().__init__()
        self.view1, self.view2 = kornia_simclr_view(size, config), kornia_simclr_view(size, config)
        self.normalize = Normalize(MEAN, STD)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float() / 255
        return self.normalize(self.view1(x)), self.normalize(self.view2(x))


def torchvision_view(size: int, config: SimCLRViewConfig) -> v2.Compose:
    s = config.jitter_strength
    ops = [
        v2.RandomResizedCrop(size, scale=config.crop_scale, ratio=config.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(config.hflip_prob),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=config.jitter_prob),
        v2.RandomGrayscale(config.grayscale_prob),
    ]
    if size >= config.blur_min_size:
        kernel = int(0.1 * size) // 2 * 2 + 1
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel, config.blur_sigma)], p=config.blur_prob))
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    return v2.Compose(ops)


# --- timing ------------------------------------------------------------------------------------


def timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def run(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin

    return run


def interleaved(
    cases: dict[str, Callable[[], object]], images: int, rounds: int, device: torch.device
) -> dict:
    """images/s per case: median over ``rounds`` interleaved rounds after one warm-up each."""
    run = timer(device)
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(run(fn))
    return {name: images / statistics.median(t) for name, t in times.items()}


def photos(batch: int, size: int) -> np.ndarray:
    """``[batch, size, size, 3]`` uint8 crops of scikit-learn's two sample photos (real content)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    sources = load_sample_images().images  # 427 x 640 x 3 each
    out = np.empty((batch, size, size, 3), dtype=np.uint8)
    for i in range(batch):
        src = sources[i % len(sources)]
        side = int(rng.integers(size // 2, min(src.shape[:2]) + 1))
        top = int(rng.integers(0, src.shape[0] - side + 1))
        left = int(rng.integers(0, src.shape[1] - side + 1))
        crop = Image.fromarray(src[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(crop)
    return out


def simclr(size: int, batch: int, rounds: int, device: torch.device, per_image: bool) -> dict:
    config = SimCLRViewConfig()
    arrays = photos(batch, size)
    uint8 = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous().to(device)
    kornia = KorniaSimCLR(size, config).to(device)
    batched = SimCLRAugment(size, MEAN, STD, config).to(device)
    cases: dict[str, Callable[[], object]] = {
        "kornia": lambda: kornia(uint8),
        "batched": lambda: batched(uint8),
    }
    rates = interleaved(cases, batch, rounds, device)
    if per_image:
        tensors = list(torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous())
        pil = [Image.fromarray(a) for a in arrays]
        view1, view2 = torchvision_view(size, config), torchvision_view(size, config)
        per = {
            "tv2_uint8": lambda: [(view1(t), view2(t)) for t in tensors],
            "tv2_pil": lambda: [(view1(p), view2(p)) for p in pil],
        }
        rates.update(interleaved(per, batch, rounds, torch.device("cpu")))
    return rates


def multicrop(batch: int, rounds: int, device: torch.device) -> dict:
    """DINO's views: two 224-px global crops (scale 0.4-1; blur 1.0 / 0.1, solarize 0 / 0.2) and
    eight 96-px local crops (scale 0.05-0.4, blur 0.5), from 224-px images."""
    glob = ViewConfig(size=224, crop_scale=(0.4, 1.0), blur_prob=1.0)
    views = [glob, ViewConfig(size=224, crop_scale=(0.4, 1.0), blur_prob=0.1, solarize_prob=0.2)]
    views += [ViewConfig(size=96, crop_scale=(0.05, 0.4), blur_prob=0.5)] * 8
    uint8 = torch.from_numpy(photos(batch, 224)).permute(0, 3, 1, 2).contiguous().to(device)
    augment = MultiViewAugment(views, MEAN, STD)
    cases = {"dino_2x224_8x96": lambda: augment(uint8)}
    if device.type == "cuda":
        half = MultiViewAugment(views, MEAN, STD, out_dtype=torch.bfloat16, compute_dtype=torch.float16)
        cases["dino_2x224_8x96_fp16"] = lambda: half(uint8)
    return interleaved(cases, batch, rounds, device)


# --- the design choices against their alternatives ---------------------------------------------


def jitter_with_masks(v: torch.Tensor, params, bound: float) -> torch.Tensor:
    """The alternative to hue groups: in each of the 4 rounds, evaluate all four operations on the
    whole batch with per-sample factors and keep each sample's own (4 hue shifts per sample, not 1)."""
    f = params.factors.to(v.device)
    op_of = torch.where(params.jitter, params.order.t(), 4).to(v.device)  # [4, B]; 4: not jittered
    weights = torch.tensor(GRAY_WEIGHTS, device=v.device).view(1, 3, 1, 1)
    fb, fc, fs = (f[:, i].view(-1, 1, 1, 1) for i in range(3))
    for r in range(4):
        gray = (v * weights).sum(1, keepdim=True)
        candidates = [
            (v * fb).clamp_(0, bound),
            (fc * v + (1 - fc) * gray.mean((2, 3), keepdim=True)).clamp_(0, bound),
            (fs * v + (1 - fs) * gray).clamp_(0, bound),
            adjust_hue_(v.clone(), f[:, 3]),
        ]
        out = v
        for k, candidate in enumerate(candidates):
            out = torch.where((op_of[r] == k).view(-1, 1, 1, 1), candidate, out)
        v = out
    return v


def alternatives(size: int, batch: int, rounds: int, device: torch.device) -> dict:
    config = SimCLRViewConfig().to_view(size)
    uint8 = torch.from_numpy(photos(batch, size)).permute(0, 3, 1, 2).contiguous().to(device)
    x, bound = as_float(uint8)
    params = sample_view_params(batch, (size, size), config)
    dev = params.to(device)
    gx, gy = sample_coordinates(params.boxes, params.flip, size)
    gx, gy = ((2 * gx + 1) / size - 1).float().to(device), ((2 * gy + 1) / size - 1).float().to(device)

    def grid():
        g = torch.stack([gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=-1)
        return torch.nn.functional.grid_sample(
            x, g, mode="bilinear", padding_mode="border", align_corners=False
        )

    cases: dict[str, Callable[[], object]] = {
        "crop_grid_sample": grid,
        "crop_matrices": lambda: matrix_resample(x, dev.boxes, dev.flip, size, "bilinear"),
    }
    v = grid()
    order_cfg = config
    matrix, means = round_matrices(params.order, params.factors, params.jitter)
    matrix, means = matrix.to(device), means.to(device)
    position = (params.order == HUE).int().argmax(1)
    groups = torch.sort(torch.where(params.jitter, position, 4), stable=True).indices
    shifts = params.factors[groups, 3].to(device)
    groups = groups.to(device)

    def hue_groups():
        w = v.clone()
        start = 0
        for r in range(4):
            stop = start + params.hue_counts[r]
            index = groups[start:stop]
            w.index_copy_(0, index, adjust_hue_(w[index], shifts[start:stop]))
            start = stop
            if r < 3:
                w = linear_round(w, matrix[r], means[r], bound)
        return w

    cases["order_hue_groups"] = hue_groups
    cases["order_masks"] = lambda: jitter_with_masks(v.clone(), dev, bound)
    if order_cfg.blur_prob > 0:
        kernels = gaussian_kernels(params.sigma, order_cfg.blur_kernel(size)).to(device)
        cases["blur_matmul"] = lambda: blur_matmul(v, kernels)
        cases["blur_conv"] = lambda: blur(v, kernels)
    return interleaved(cases, batch, rounds, device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-per-image", action="store_true", help="skip the torchvision per-image rates")
    parser.add_argument("--multicrop", action="store_true", help="DINO's 2 x 224 + 8 x 96 views")
    parser.add_argument("--alternatives", action="store_true", help="time the design choices")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"SimCLR two-view augmentation, batch {args.batch_size}, {device.type} "
        f"({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), images/s, median of {args.rounds} interleaved rounds"
    )
    results: dict = {}
    for size in args.sizes:
        rates = simclr(size, args.batch_size, args.rounds, device, not args.no_per_image)
        results[f"simclr_{size}"] = rates
        line = " | ".join(f"{k} {v:9.1f}" for k, v in rates.items())
        print(f"  {size:4d} px: {line} | batched / kornia {rates['batched'] / rates['kornia']:.2f}")
    if args.multicrop:
        results["multicrop"] = multicrop(args.batch_size, args.rounds, device)
        print("  multi-crop: " + " | ".join(f"{k} {v:9.1f}" for k, v in results["multicrop"].items()))
    if args.alternatives:
        for size in args.sizes:
            rates = alternatives(size, args.batch_size, args.rounds, device)
            results[f"alternatives_{size}"] = rates
            print(
                f"  alternatives {size} px (one view): "
                + " | ".join(f"{k} {v:9.1f}" for k, v in rates.items())
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
