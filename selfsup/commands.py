"""The ``selfsup`` subcommands that are not LightningCLI's: ``probe``, ``export``, ``data optimize`` and
``preview``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from jsonargparse import ActionConfigFile

from selfsup.arguments import CommandParser, PassThroughParser, add_flag


@dataclass
class DataOverrides:
    """Data to probe on; every field left unset comes from the checkpoint's own training data."""

    source: Literal["digits", "folder", "cifar10", "cifar100", "stl10", "streaming"] | None = None
    root: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    train_subset: int | None = None
    val_subset: int | None = None
    subset_seed: int | None = None


def probe_parser() -> CommandParser:
    parser = CommandParser(
        "probe",
        description=(
            "kNN (k=20, 200) and linear-probe accuracy of frozen encoders on a labelled data set. "
            "Features are extracted once and cached on disk."
        ),
    )
    parser.add_argument("-c", "--config", action=ActionConfigFile)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files and/or run folders")
    parser.add_class_arguments(DataOverrides, "data")
    parser.add_argument(
        "--pool",
        type=Literal["token", "avg"] | None,
        default=None,
        help="features: class token or mean of patch tokens (default: the method's)",
    )
    parser.add_argument("--k", type=list[int], default=[20, 200], help="kNN neighbours")
    parser.add_argument("--temperature", type=float, default=0.07, help="kNN vote temperature")
    parser.add_argument("--probe_epochs", type=int, default=100, help="linear-probe epochs")
    parser.add_argument(
        "--out", type=str | None, default=None, metavar="DIR", help="report folder (default: <run>/probe)"
    )
    parser.add_argument(
        "--cache_dir",
        type=str | None,
        default=None,
        help="feature cache (default: $SELFSUP_CACHE or ~/.cache/selfsup)",
    )
    parser.add_argument("--device", type=str, default="auto")
    parser.add_argument(
        "--last_blocks",
        type=int,
        default=1,
        help="concatenate the features of the last N blocks (DINO's linear evaluation: 4)",
    )
    return parser


def probe_command(argv: Sequence[str]):
    from selfsup.eval.probe import probe

    args = probe_parser().parse_args(list(argv))
    data = asdict(DataOverrides(**args.data.as_dict())) if args.data else {}
    return probe(
        args.checkpoints,
        data=data,
        pool=args.pool,
        ks=tuple(args.k),
        temperature=args.temperature,
        probe_epochs=args.probe_epochs,
        out=args.out,
        cache_dir=args.cache_dir,
        device=args.device,
        last_blocks=args.last_blocks,
    )


def export_parser() -> CommandParser:
    parser = CommandParser(
        "export",
        description=(
            "Write a folder that plain timm loads with timm.create_model('local-dir:DIR', pretrained=True): "
            "config.json, model.safetensors (the encoder only) and selfsup.json (metadata)."
        ),
    )
    parser.add_argument(
        "checkpoint", help="a selfsup checkpoint (.ckpt): pretraining (exports the backbone) or fine-tune"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="the export folder to write")
    parser.add_argument(
        "--pool",
        type=Literal["token", "avg"] | None,
        default=None,
        help="what the exported model returns (default: the method's pooling)",
    )
    parser.add_argument(
        "--probe",
        type=str | None,
        default=None,
        help="a probe.json whose scores for this checkpoint go into the metadata "
        "(default: <run>/probe/probe.json when present)",
    )
    add_flag(
        parser,
        "overwrite",
        "replace --out if it holds an earlier export (a folder holding anything else is refused)",
    )
    return parser


def export_command(argv: Sequence[str]) -> Path:
    from selfsup.eval.probe import probe_scores_for
    from selfsup.export import export

    args = export_parser().parse_args(list(argv))
    checkpoint = Path(args.checkpoint)
    probe_file = Path(args.probe) if args.probe else checkpoint.parent.parent / "probe" / "probe.json"
    # matched by name, else by weights: last.ckpt gets the scores of the best-* it repeats
    scores = probe_scores_for(checkpoint, probe_file) if probe_file.is_file() else {}
    out = export(checkpoint, args.out, pool=args.pool, probe_scores=scores, overwrite=args.overwrite)
    print(
        f"exported {checkpoint} to {out}; load it with timm.create_model('local-dir:{out}', pretrained=True) "
        f"or transformers.AutoModel.from_pretrained('{out}')"
    )
    return out


def data_parser() -> CommandParser:
    parser = CommandParser(
        "data",
        prog="selfsup data optimize",
        description=(
            "Write an ImageFolder (SRC/train/<class>/*, SRC/val/<class>/*) as LitData chunks in DST, resized "
            "and centre-cropped, to stream with --data.init_args.source streaming --data.init_args.root DST."
        ),
    )
    parser.add_argument("action", type=Literal["optimize"], help="optimize (the one action)")
    parser.add_argument("src", help="the ImageFolder to read")
    parser.add_argument("dst", help="the output folder (new or empty)")
    parser.add_argument("--image_size", type=int, required=True, help="side of the stored images")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument(
        "--format",
        type=Literal["raw", "jpeg"],
        default="raw",
        help="raw uint8 (fastest to read) or JPEG (smaller)",
    )
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    return parser


def data_command(argv: Sequence[str]) -> dict:
    import time

    from selfsup.data.streaming import optimize_folder

    args = data_parser().parse_args(list(argv))
    started = time.perf_counter()
    manifest = optimize_folder(
        args.src, args.dst, args.image_size, args.num_workers, args.format, args.quality, progress=True
    )
    seconds = time.perf_counter() - started
    print(
        f"wrote {manifest['splits']} images of {args.image_size} px ({args.format}) to {args.dst} "
        f"in {seconds:.1f} s"
    )
    return manifest


def preview_parser() -> PassThroughParser:
    """The options of ``selfsup preview``; the arguments it does not know go to the config."""
    parser = PassThroughParser(
        "preview",
        description="Write a PNG of original training images and the views the config's augmentation makes "
        "of them (the first row shows each view's crop box), before a long run. Other arguments are "
        "passed to the config as in `selfsup fit` (e.g. --data.init_args.root DIR).",
    )
    parser.add_argument("-c", "--config", required=True, help="a selfsup config (YAML)")
    parser.add_argument("--out", default="views.png", metavar="PNG", help="the PNG to write")
    parser.add_argument("--num_images", type=int, default=8, help="images (columns)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random views")
    return parser


def preview_command(argv: Sequence[str]) -> Path:
    """``selfsup preview -c CONFIG [--out views.png] [--num_images 8] [--seed 0] [--section.key value ...]``"""
    import torch
    from torchvision.utils import save_image

    from selfsup.augment.preview import preview_grid, views_of

    args, overrides = preview_parser().parse_known_args(list(argv))
    from selfsup.lightning_cli import SelfSupCLI, cli_arguments

    kwargs = cli_arguments(["-c", args.config, *overrides])
    cli = SelfSupCLI(**kwargs, run=False)
    data = cli.datamodule
    data.setup("fit")
    loader = data.eval_dataloader("train", batch_size=args.num_images, max_samples=args.num_images)
    images = next(iter(loader))[0]
    if isinstance(images, (list, tuple)):  # data.decode: gpu — decode here on the CPU
        from selfsup.data.decode import decode_batch

        images = decode_batch(images, data.image_size, torch.device("cpu"))
    grid = preview_grid(cli.model, images[: args.num_images], seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out)
    views = len(views_of(cli.model).views)
    print(
        f"wrote {out}: {args.num_images} originals with the crop box of each view, then {views} rows of views"
    )
    return out
