"""Zero-shot top-1 on a held-out split of CLIP from scratch and of LiT (locked image tower), and the
CLIP step time relative to SimCLR's, on the CPU: on the digits, or on a CIFAR-10 subset (an
ImageFolder, captions from templates).

    python benchmarks/clip_zero_shot.py --seeds 0 1 2 --epochs 6 [--lit_from runs/quickstart/version_0/export]
    python benchmarks/clip_zero_shot.py --data cifar10 --root ../shared/data/cifar10 --train_subset 4000 \
        --val_subset 1000 --image_size 32 --depth 4 --epochs 10 --simclr_epochs 20 --seeds 0 1 --no_random_lit

LiT runs on a random-initialised export (what the test suite checks) and on a SimCLR export: the one
``--lit_from`` names (``selfsup fit -c configs/quickstart.yaml`` then ``selfsup export``), or, with
``--simclr_epochs N``, one this script trains for N epochs on the same training split (seeded like
the rest) and exports. CLIP and LiT take equal steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import torch

from selfsup import CLIP, ImageDataModule, ImageTextDataModule, SimCLR
from selfsup.eval.zeroshot import zero_shot_accuracy
from selfsup.export import write_export
from selfsup.optim import OptimConfig

TINY = {"img_size": 16, "patch_size": 4}  # img_size follows --image_size
TEXT = {"embed_dim": 64, "text_width": 64, "text_layers": 2, "text_heads": 2, "context_length": 16}


def clip_model(depth: int, lr: float = 5e-4, **kwargs) -> CLIP:
    optim = OptimConfig(base_lr=lr, weight_decay=0.05, betas=(0.9, 0.98), warmup_epochs=1)
    return CLIP(
        "vit_tiny_patch16_224", **TINY, encoder_kwargs={"depth": depth}, **TEXT, optim=optim, **kwargs
    )


DATA: dict = {"source": "digits", "image_size": 16}


def digits(batch_size: int = 128) -> ImageTextDataModule:
    """The chosen data (``DATA``: the digits unless ``--data`` says otherwise), with captions."""
    return ImageTextDataModule(**DATA, batch_size=batch_size, num_workers=0, context_length=16)


def images_only() -> ImageDataModule:
    """The chosen data without captions, for SimCLR."""
    data = {k: v for k, v in DATA.items() if k != "templates"}
    return ImageDataModule(**data, batch_size=128, num_workers=0)


def simclr_export(depth: int, epochs: int, folder: str) -> str:
    """A SimCLR encoder trained for ``epochs`` on the chosen data's training split, exported."""
    model = SimCLR("vit_tiny_patch16_224", **TINY, encoder_kwargs={"depth": depth}, projection_hidden_dim=512)
    fit(model, images_only(), epochs)
    return str(write_export(folder, model.encoder, "t", model.mean, model.std, {"method": "simclr"}))


def fit(model, data, epochs: int) -> float:
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, data)
    return (time.perf_counter() - start) / max(trainer.global_step, 1)


def zero_shot(model: CLIP, data: ImageTextDataModule) -> float:
    loader = data.eval_dataloader("val", batch_size=256)
    return zero_shot_accuracy(model, loader, data.classnames, data.templates, 16, model.mean, model.std)[
        "top1"
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--lit_from", default=None)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--no_lit", action="store_true")
    parser.add_argument("--no_clip", action="store_true", help="skip CLIP from scratch")
    parser.add_argument("--no_random_lit", action="store_true", help="skip LiT on a random tower")
    parser.add_argument("--timing", action="store_true", help="also time SimCLR's step")
    parser.add_argument("--data", choices=["digits", "cifar10"], default="digits")
    parser.add_argument("--root", default=None, help="the CIFAR-10 ImageFolder (train/, test/ or val/)")
    parser.add_argument("--train_subset", type=int, default=None)
    parser.add_argument("--val_subset", type=int, default=None)
    parser.add_argument("--image_size", type=int, default=16)
    parser.add_argument("--simclr_epochs", type=int, default=0, help="train the LiT tower here (SimCLR)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    TINY["img_size"] = args.image_size
    DATA.update(image_size=args.image_size, train_subset=args.train_subset, val_subset=args.val_subset)
    if args.data == "cifar10":
        DATA.update(source="folder", root=args.root, templates=["a photo of a {}."])
    rows = []
    for seed in args.seeds:
        if not args.no_clip:
            L.seed_everything(seed)
            model = clip_model(args.depth, args.lr)
            before = zero_shot(model, digits())
            step = fit(model, digits(), args.epochs)
            rows.append(("clip", seed, before, zero_shot(model, digits()), step))
        if args.no_lit:
            print(rows[-1], flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            L.seed_everything(seed)
            source = CLIP("vit_tiny_patch16_224", **TINY, encoder_kwargs={"depth": args.depth}, **TEXT)
            start = write_export(
                f"{tmp}/start", source.encoder, "t", source.mean, source.std, {"method": "clip"}
            )
            lit_from = args.lit_from
            if args.simclr_epochs:
                L.seed_everything(seed)
                lit_from = simclr_export(args.depth, args.simclr_epochs, f"{tmp}/simclr")
            for name, init in (("lit_random", start), ("lit_simclr", lit_from)):
                if init is None or (name == "lit_random" and args.no_random_lit):
                    continue
                L.seed_everything(seed)
                model = clip_model(args.depth, args.lr, lock_image=True, init_from=str(init))
                before = zero_shot(model, digits())
                step = fit(model, digits(), args.epochs)
                rows.append((name, seed, before, zero_shot(model, digits()), step))
        for row in [r for r in rows if r[1] == seed]:
            print(
                f"{row[0]:<11} seed {row[1]}  zero-shot top-1 {row[2]:.3f} -> {row[3]:.3f}  {row[4] * 1000:.0f} ms/step",
                flush=True,
            )
    if args.timing:
        L.seed_everything(0)
        simclr = SimCLR(
            "vit_tiny_patch16_224", **TINY, encoder_kwargs={"depth": args.depth}, projection_hidden_dim=512
        )
        step = fit(simclr, images_only(), args.epochs)
        clip_steps = [r[4] for r in rows if r[0] == "clip"]
        print(
            f"simclr {step * 1000:.0f} ms/step; clip {sum(clip_steps) / len(clip_steps) * 1000:.0f} ms/step "
            f"({sum(clip_steps) / len(clip_steps) / step:.2f}x)"
        )


if __name__ == "__main__":
    main()
