"""SimCLR augmentation alone (two views per image), side by side in one process:
Kornia on whole batches (selfsup) vs torchvision per image on PIL images (what DataLoader workers do).

Both make the same views: random resized crop (0.08-1), flip, colour jitter (p=0.8), grayscale
(p=0.2), Gaussian blur (p=0.5, kernel 10% of the side; only at 224 px, as in selfsup), normalise.
Rates are images/s for one process; DataLoader workers multiply the torchvision rate by at most the
number of free cores.

    python benchmarks/augment_throughput.py --sizes 32 224 --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from selfsup.augment import SimCLRAugment, SimCLRViewConfig

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def torchvision_view(size: int, config: SimCLRViewConfig) -> T.Compose:
    s = config.jitter_strength
    ops = [
        T.RandomResizedCrop(size, scale=config.crop_scale, ratio=config.crop_ratio),
        T.RandomHorizontalFlip(config.hflip_prob),
        T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=config.jitter_prob),
        T.RandomGrayscale(config.grayscale_prob),
    ]
    if size >= config.blur_min_size:
        kernel = int(0.1 * size) // 2 * 2 + 1
        ops.append(T.RandomApply([T.GaussianBlur(kernel, config.blur_sigma)], p=config.blur_prob))
    ops += [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(ops)


def bench(size: int, batch_size: int, repeats: int, device: torch.device) -> dict[str, float]:
    config = SimCLRViewConfig()
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    pil_images = [Image.fromarray(a) for a in arrays]
    uint8 = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous().to(device)

    kornia_aug = SimCLRAugment(size, MEAN, STD, config).to(device)
    view1, view2 = torchvision_view(size, config), torchvision_view(size, config)

    def kornia_once():
        out = kornia_aug(uint8)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def torchvision_once():
        return [(view1(img), view2(img)) for img in pil_images]

    rates = {}
    for name, fn in (("kornia_batched", kornia_once), ("torchvision_per_image", torchvision_once)):
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        rates[name] = repeats * batch_size / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"SimCLR two-view augmentation, batch {args.batch_size}, {device.type} "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    results = {}
    for size in args.sizes:
        rates = bench(size, args.batch_size, args.repeats, device)
        results[size] = rates
        ratio = rates["kornia_batched"] / rates["torchvision_per_image"]
        print(
            f"  {size:4d} px: Kornia batched {rates['kornia_batched']:9.1f} images/s | torchvision per image "
            f"{rates['torchvision_per_image']:9.1f} images/s | ratio {ratio:.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
