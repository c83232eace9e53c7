"""Detection, side by side in one process, in interleaved rounds (medians over rounds):

1. ``augment``: crop + flip + resize of a uint8 batch *with its boxes*:
   - ``selfsup``: ``selfsup.augment.boxes.DetectionAugment`` (parameters on the CPU, one batched
     ``roi_align``, boxes on the padded form, boxes leaving the crop dropped, back to a list);
   - ``kornia``: Kornia's ``AugmentationSequential(RandomResizedCrop, RandomHorizontalFlip,
     data_keys=["input", "bbox_xyxy"])`` on the same batch: the library way; it moves the boxes but
     neither clips nor drops them, so it does less;
   - ``tv2``: torchvision transforms v2 per image (``RandomResizedCrop``, ``RandomHorizontalFlip``,
     ``SanitizeBoundingBoxes`` on ``tv_tensors``), what DataLoader workers would do, on the CPU.
   Rates are images/s.
2. ``detector``: ``build_detector(SimpleFeaturePyramid(ViT-Tiny))`` (FCOS): a training step
   (forward, backward, AdamW) and inference, images/s.

    python benchmarks/detection.py --size 64 --patch 8 --batch-size 16
    python benchmarks/detection.py --device cuda --size 512 --patch 16 --batch-size 16 --depth 12

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import kornia.augmentation as K
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from selfsup.augment.boxes import DetectionAugment
from selfsup.encoders import create_encoder
from selfsup.heads.detection import SimpleFeaturePyramid, build_detector


def make_batch(batch: int, side: int, objects: int, generator: torch.Generator):
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, generator=generator)
    targets = []
    for i in range(batch):
        n = i % (objects + 1)
        xy = torch.rand(n, 2, generator=generator) * side * 0.7
        wh = side * (0.05 + 0.25 * torch.rand(n, 2, generator=generator))
        boxes = torch.cat([xy, (xy + wh).clamp(max=side)], 1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, 10, (n,), generator=generator)})
    return images, targets


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def rounds(candidates: dict[str, Callable[[], object]], n: int, device: torch.device) -> dict[str, float]:
    for fn in candidates.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(n):
        for name, fn in candidates.items():
            times[name].append(timed(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_augment(args, device: torch.device) -> None:
    generator = torch.Generator().manual_seed(0)
    images, targets = make_batch(args.batch_size, args.source_size, args.objects, generator)
    images_dev = images.to(device)
    targets_dev = [{k: v.to(device) for k, v in t.items()} for t in targets]
    ours = DetectionAugment(args.size, crop_scale=(0.25, 1.0))
    kornia = K.AugmentationSequential(
        K.RandomResizedCrop((args.size, args.size), scale=(0.25, 1.0)),
        K.RandomHorizontalFlip(),
        data_keys=["input", "bbox_xyxy"],
    ).to(device)
    kornia_boxes = [t["boxes"] for t in targets_dev]
    tv = v2.Compose(
        [
            v2.RandomResizedCrop(args.size, scale=(0.25, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.SanitizeBoundingBoxes(),
        ]
    )
    tv_samples = [
        (
            tv_tensors.Image(img),
            {
                "boxes": tv_tensors.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=img.shape[-2:]),
                "labels": t["labels"],
            },
        )
        for img, t in zip(images, targets, strict=True)
    ]
    candidates = {
        "selfsup_boxes_on_cpu": lambda: ours(images_dev, targets),
        "selfsup_boxes_on_device": lambda: ours(images_dev, targets_dev),
        "kornia": lambda: kornia(images_dev.float() / 255, kornia_boxes),
        "tv2_per_image_cpu": lambda: [tv(img, t) for img, t in tv_samples],
    }
    medians = rounds(candidates, args.rounds, device)
    base = medians["kornia"]
    for name, seconds in medians.items():
        print(
            json.dumps(
                {
                    "bench": "augment",
                    "impl": name,
                    "device": str(device),
                    "batch": args.batch_size,
                    "source": args.source_size,
                    "size": args.size,
                    "images_per_s": round(args.batch_size / seconds, 1),
                    "time_vs_kornia": round(seconds / base, 3),
                }
            )
        )


def bench_detector(args, device: torch.device) -> None:
    torch.manual_seed(0)
    encoder = create_encoder(
        "vit_tiny_patch16_224", img_size=args.size, patch_size=args.patch, depth=args.depth
    )
    detector = build_detector(
        SimpleFeaturePyramid(encoder, out_channels=args.channels), 10, args.size, head_convs=args.head_convs
    ).to(device)
    generator = torch.Generator().manual_seed(0)
    images, targets = make_batch(args.batch_size, args.size, args.objects, generator)
    images = images.to(device).float() / 255
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-4)

    def train_step():
        detector.train()
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def infer():
        detector.eval()
        detector(images)

    medians = rounds({"train_step": train_step, "inference": infer}, args.rounds, device)
    for name, seconds in medians.items():
        print(
            json.dumps(
                {
                    "bench": "detector",
                    "impl": name,
                    "device": str(device),
                    "size": args.size,
                    "patch": args.patch,
                    "depth": args.depth,
                    "batch": args.batch_size,
                    "ms_per_batch": round(seconds * 1000, 1),
                    "images_per_s": round(args.batch_size / seconds, 1),
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64, help="output / detector image side")
    parser.add_argument("--source-size", type=int, default=96, help="side of the images before augmentation")
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--head-convs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--objects", type=int, default=4, help="up to this many boxes per image")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["augment", "detector"], default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        json.dumps(
            {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor()}
        )
    )
    if args.only in (None, "augment"):
        bench_augment(args, device)
    if args.only in (None, "detector"):
        bench_detector(args, device)


if __name__ == "__main__":
    main()
