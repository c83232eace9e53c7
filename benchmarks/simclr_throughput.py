"""SimCLR training throughput, side by side in one process: selfsup vs lightly's reference pipeline.

selfsup: the DataLoader only decodes and resizes (uint8 batches); both views are made by Kornia on
whole batches on the device; InfoNCE from selfsup.
reference: the pipeline of lightly's SimCLR examples: torchvision transforms per image in DataLoader
workers (lightly's ``SimCLRTransform``), lightly's ``NTXentLoss``.

Both use the same timm encoder, projection head, optimiser, batch size, images and number of
workers. The two alternate in rounds (so that background load hits both alike); in each round a
pipeline starts fresh DataLoader workers, runs warm-up steps, then is timed, and its workers are
shut down before the other pipeline starts, so neither one's workers prefetch (and take CPU) while
the other is being timed.

    pip install -e ".[bench]"
    python benchmarks/simclr_throughput.py --root ../shared/data/cifar10 --image-size 32 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

from selfsup import ImageDataModule, SimCLR
from selfsup.optim import OptimConfig


def make_model(args) -> SimCLR:
    return SimCLR(
        args.encoder,
        img_size=args.image_size,
        patch_size=args.patch_size,
        encoder_kwargs={"depth": args.depth} if args.depth else None,
        projection_hidden_dim=512,
        projection_dim=128,
        temperature=0.2,
        optim=OptimConfig(base_lr=1e-3),
    )


def selfsup_pipeline(args, device):
    model = make_model(args).to(device)
    data = ImageDataModule(
        "folder",
        args.root,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        train_subset=args.images,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data.setup()
    loader = DataLoader(
        data.train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers
    )

    def step(stream):
        images, _ = next(stream)
        view1, view2 = model.augment(images.to(device, non_blocking=True))
        z1, z2 = model(torch.cat([view1, view2])).chunk(2)
        loss = model.criterion(z1, z2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return loader, step


def reference_pipeline(args, device):
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    from torchvision.datasets import ImageFolder

    model = make_model(args).to(device)  # same encoder and projection head; lightly's loss and transforms
    encoder_cfg = model.encoder.pretrained_cfg
    transform = SimCLRTransform(
        input_size=args.image_size,
        cj_strength=0.5,
        gaussian_blur=0.0,
        normalize={"mean": list(encoder_cfg["mean"]), "std": list(encoder_cfg["std"])},
    )
    folder = ImageFolder(str(Path(args.root) / "train"), transform=transform)
    generator = torch.Generator().manual_seed(0)
    subset = Subset(folder, torch.randperm(len(folder), generator=generator)[: args.images].tolist())
    loader = DataLoader(
        subset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers
    )
    criterion = NTXentLoss(temperature=0.2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(stream):
        (view1, view2), _ = next(stream)
        z1, z2 = model(torch.cat([view1.to(device), view2.to(device)])).chunk(2)
        loss = criterion(z1, z2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return loader, step


def window(loader, step, warmup: int, steps: int, device) -> float:
    """Fresh workers, ``warmup`` untimed steps, ``steps`` timed steps, workers shut down."""
    stream = iter(loader)
    for _ in range(warmup):
        step(stream)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(stream)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del stream  # shuts the workers down before the other pipeline is timed
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="../shared/data/cifar10")
    parser.add_argument("--encoder", default="vit_tiny_patch16_224")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--depth", type=int, default=0, help="override the encoder depth (0: the name's)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=4096, help="training images to cycle through")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per pipeline per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each window")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--flush-denormal",
        action="store_true",
        help="flush denormal floats to zero on the CPU (for both pipelines)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_flush_denormal(args.flush_denormal)
    L.seed_everything(0, verbose=False)

    pipelines = {
        "selfsup (Kornia, batched, on device)": selfsup_pipeline(args, device),
        "reference (lightly: torchvision per image in workers + NTXentLoss)": reference_pipeline(
            args, device
        ),
    }
    seconds = dict.fromkeys(pipelines, 0.0)
    for _ in range(args.rounds):
        for name, (loader, step) in pipelines.items():
            seconds[name] += window(loader, step, args.warmup, args.steps, device)
    images = args.steps * args.rounds * args.batch_size
    rates = {name: images / s for name, s in seconds.items()}
    names = list(rates)
    print(
        f"\nSimCLR training throughput: {args.encoder} at {args.image_size} px (patch {args.patch_size}"
        f"{', depth ' + str(args.depth) if args.depth else ''}), batch {args.batch_size}, {args.workers} workers, "
        f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        f"{', denormals flushed' if args.flush_denormal else ''})"
    )
    for name in names:
        print(f"  {name:70s} {rates[name]:8.1f} images/s")
    print(f"  ratio selfsup / reference: {rates[names[0]] / rates[names[1]]:.2f}")
    print(json.dumps({"images_per_s": rates, "ratio": rates[names[0]] / rates[names[1]], "args": vars(args)}))


if __name__ == "__main__":
    main()
