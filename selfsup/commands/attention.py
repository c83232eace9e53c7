"""``selfsup attention CKPT_OR_EXPORT IMAGE... --out DIR [--image_size N] [--threshold 0.6]``: the
class-token attention of each head of the last block drawn over each image, as PNGs
(:func:`selfsup.eval.attention_figure.save_attention_maps`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from selfsup.arguments import CommandParser
from selfsup.eval.attention_figure import save_attention_maps
from selfsup.eval.class_attention import _last_block


def attention_parser() -> CommandParser:
    parser = CommandParser(
        "attention",
        description=(
            "For each image, a PNG of the image and the class-token attention of each head of the "
            "last block (DINO's figure)."
        ),
    )
    parser.add_argument("model", help="a selfsup checkpoint (.ckpt) or an export folder")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", type=str, required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument(
        "--image_size", type=int | None, default=None, help="image side in pixels (default: the model's)"
    )
    parser.add_argument(
        "--threshold",
        type=float | None,
        default=None,
        help="show the patches holding this share of each head's attention (DINO: 0.6) instead of the map",
    )
    parser.add_argument("--panel_size", type=int | None, default=None, help="panel width in pixels")
    parser.add_argument("--device", type=str, default="auto", help="cpu, cuda, ... (auto: cuda if available)")
    return parser


def attention_command(argv: Sequence[str]) -> list[Path]:
    """``selfsup attention CKPT_OR_EXPORT IMAGE... --out DIR [--image_size N] [--threshold 0.6]``."""
    from selfsup.load import load_encoder

    args = attention_parser().parse_args(list(argv))
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {', '.join(missing)}.")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_encoder(args.model).to(device)
    _last_block(encoder)
    native = int(encoder.patch_embed.img_size[0])
    image_size = args.image_size or native
    patch = int(encoder.patch_embed.patch_size[0])
    if image_size % patch:
        raise ValueError(
            f"--image_size {image_size} is not a multiple of the model's {patch}-px patches: use e.g. "
            f"{max(patch, image_size // patch * patch)}."
        )
    if image_size != native and not getattr(encoder, "dynamic_img_size", False):
        encoder.set_input_size(img_size=image_size)  # timm: resamples the position embedding
    cfg = encoder.pretrained_cfg
    paths = save_attention_maps(
        encoder, args.images, args.out, cfg["mean"], cfg["std"], image_size, args.threshold, args.panel_size
    )
    shown = ", ".join(p.name for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    what = f"the patches holding {args.threshold:.0%} of the" if args.threshold is not None else "the"
    print(
        f"wrote {len(paths)} PNG{'s' if len(paths) > 1 else ''} to {args.out} ({shown}): each image at "
        f"{image_size} px and {what} class-token attention of each of the "
        f"{_last_block(encoder).attn.num_heads} heads of the last block"
    )
    return paths
