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
3. ``finetune`` (only with ``--only finetune``: it trains): does self-supervised pretraining help
   detection? ViT-Tiny encoders (``--ft-depth`` blocks, 4-px patches, 32 px) are pretrained with
   SimCLR and MAE on CIFAR-10 training images (``--pt-steps`` steps each, in this process), exported,
   then fine-tuned with ``FineTune(task="detection")`` (strategy ``--strategies``) for ``--ft-steps``
   steps on CIFAR-10 objects pasted on 32-px canvases, side by side with the same encoder at random
   initialisation: same data, seed, steps and hyperparameters. Reports COCO mAP, mAP@50 and mAP@75
   of the held-out canvases at initialisation and after fine-tuning, and the seconds each took.

    python benchmarks/detection.py --size 64 --patch 8 --batch-size 16
    python benchmarks/detection.py --device cuda --size 512 --patch 16 --batch-size 16 --depth 12
    python benchmarks/detection.py --only finetune --cifar ../shared/data/cifar10

Prints one JSON line per measurement (and, for ``finetune``, a Markdown table at the end).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def _trainer(steps: int, **kwargs):
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def pretrain(method: str, args, work: Path) -> tuple[str, float]:
    """A ``method`` run of ``--pt-steps`` steps on ``--pt-images`` CIFAR-10 training images at 32 px,
    exported; returns the export folder and the seconds it took."""
    import lightning as L

    from selfsup import MAE, ImageDataModule, SimCLR
    from selfsup.export import export

    start = time.perf_counter()
    L.seed_everything(args.seed)
    common = dict(img_size=args.ft_size, patch_size=4, encoder_kwargs={"depth": args.ft_depth})
    steps_per_epoch = max(1, args.pt_images // args.pt_batch)
    warmup = min(10.0, 0.1 * args.pt_steps / steps_per_epoch)  # 10 % of the run, in epochs
    if method == "simclr":  # configs/simclr/vit_tiny_cifar10.yaml's recipe, shorter
        module = SimCLR(
            "vit_tiny_patch16_224",
            temperature=0.2,
            augment={"crop_scale": (0.08, 1.0), "jitter_strength": 0.5, "blur_prob": 0.0},
            optim={"base_lr": 5e-4, "weight_decay": 0.1, "warmup_epochs": warmup},
            **common,
        )
    elif method == "mae":  # configs/mae/vit_tiny_cifar10.yaml's recipe, shorter
        module = MAE(
            "vit_tiny_patch16_224",
            mask_ratio=0.75,
            optim={"base_lr": 1.5e-4, "weight_decay": 0.05, "betas": (0.9, 0.95), "warmup_epochs": warmup},
            **common,
        )
    else:
        raise ValueError(f"--pretrain takes simclr and mae, got {method!r}.")
    data = ImageDataModule(
        source="folder",
        root=args.cifar,
        image_size=args.ft_size,
        batch_size=args.pt_batch,
        num_workers=0,
        train_subset=args.pt_images,
        val_subset=64,
    )
    trainer = _trainer(args.pt_steps, limit_val_batches=0)
    trainer.fit(module, data)
    trainer.save_checkpoint(work / f"{method}.ckpt")
    out = export(work / f"{method}.ckpt", work / f"{method}_export", overwrite=True)
    return str(out), time.perf_counter() - start


def bench_finetune(args) -> None:
    import lightning as L

    from selfsup import FineTune
    from selfsup.data.detection import DetectionDataModule
    from selfsup.data.synthetic_detection import make_detection_set

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="selfsup_detection_bench_"))
    classes = args.classes.split(",")
    root = make_detection_set(
        work / "detection",
        args.ft_images,
        canvas=args.ft_size,
        source="cifar10",
        folder=Path(args.cifar) / "train",
        classes=classes,
        objects_per_image=(1, 3),
        object_size=(0.3, 0.5),
        seed=args.seed,
    )
    encoders: dict[str, tuple[str, float]] = {"random init": ("vit_tiny_patch16_224", 0.0)}
    for method in filter(None, args.pretrain.split(",")):
        path, seconds = pretrain(method, args, work)
        encoders[f"{method} ({args.pt_steps} steps)"] = (path, seconds)
        print(
            json.dumps(
                {"bench": "pretrain", "method": method, "steps": args.pt_steps, "seconds": round(seconds, 1)}
            )
        )
    rows = []
    for strategy in args.strategies.split(","):
        for name, (backbone, _) in encoders.items():
            data = DetectionDataModule(
                str(root), image_size=args.ft_size, batch_size=args.ft_batch, num_workers=0, val_fraction=0.25
            )
            L.seed_everything(args.seed)
            random = backbone == "vit_tiny_patch16_224"
            module = FineTune(
                backbone,
                num_classes=len(classes),
                task="detection",
                strategy=strategy,
                img_size=args.ft_size,
                patch_size=4 if random else None,
                backbone_kwargs={"depth": args.ft_depth} if random else None,
                augment={"crop_scale": (0.5, 1.0)},
                detector={"channels": args.channels, "head_convs": args.head_convs},
                optim={"base_lr": args.ft_lr * 256 / args.ft_batch, "weight_decay": 0.05, "warmup_epochs": 0},
            )
            trainer = _trainer(args.ft_steps, check_val_every_n_epoch=1_000_000)
            before = trainer.validate(module, data, verbose=False)[0]
            module.train()
            start = time.perf_counter()
            trainer.fit(module, data)
            seconds = time.perf_counter() - start
            after = trainer.validate(module, data, verbose=False)[0]
            row = {
                "bench": "finetune",
                "encoder": name,
                "strategy": strategy,
                "steps": args.ft_steps,
                "map50_init": round(float(before["val/map_50"]), 3),
                "map": round(float(after["val/map"]), 3),
                "map50": round(float(after["val/map_50"]), 3),
                "map75": round(float(after["val/map_75"]), 3),
                "finetune_s": round(seconds, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| encoder | strategy | fine-tune steps | mAP@50 at init | mAP | mAP@50 | mAP@75 | fine-tune s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['encoder']} | {r['strategy']} | {r['steps']} | {r['map50_init']:.3f} | {r['map']:.3f} | "
            f"{r['map50']:.3f} | {r['map75']:.3f} | {r['finetune_s']} |"
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
    parser.add_argument("--only", choices=["augment", "detector", "finetune"], default=None)
    finetune = parser.add_argument_group("finetune (--only finetune)")
    finetune.add_argument(
        "--cifar", default="../shared/data/cifar10", help="CIFAR-10 ImageFolder (train/, test/)"
    )
    finetune.add_argument(
        "--work", default=None, help="folder for data, checkpoints, exports (default: a temp dir)"
    )
    finetune.add_argument("--pretrain", default="simclr,mae", help="methods to pretrain, comma-separated")
    finetune.add_argument("--pt-steps", type=int, default=120)
    finetune.add_argument("--pt-batch", type=int, default=64)
    finetune.add_argument(
        "--pt-images", type=int, default=5120, help="CIFAR-10 training images to pretrain on"
    )
    finetune.add_argument(
        "--strategies", default="full,linear", help="fine-tuning strategies, comma-separated"
    )
    finetune.add_argument("--ft-steps", type=int, default=150)
    finetune.add_argument("--ft-batch", type=int, default=8)
    finetune.add_argument("--ft-lr", type=float, default=1e-3, help="learning rate at --ft-batch")
    finetune.add_argument("--ft-size", type=int, default=32)
    finetune.add_argument("--ft-depth", type=int, default=2, help="ViT-Tiny blocks")
    finetune.add_argument("--ft-images", type=int, default=600, help="canvases (a quarter held out)")
    finetune.add_argument("--classes", default="airplane,automobile,bird,frog")
    finetune.add_argument("--threads", type=int, default=1)
    finetune.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        json.dumps(
            {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor()}
        )
    )
    if args.only == "finetune":
        bench_finetune(args)
        return
    if args.only in (None, "augment"):
        bench_augment(args, device)
    if args.only in (None, "detector"):
        bench_detector(args, device)


if __name__ == "__main__":
    main()
