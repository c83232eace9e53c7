"""``selfsup preview -c CONFIG [--out views.png] [--section.key value ...]``: the config's model and data
built through LightningCLI, and :func:`selfsup.augment.preview.preview_grid` of their views."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from selfsup.arguments import PassThroughParser


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
    from selfsup.data.decode import batch_images

    images = batch_images(images, data.image_size, torch.device("cpu"))  # data.decode: gpu — on the CPU here
    grid = preview_grid(cli.model, images[: args.num_images], seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out)
    views = len(views_of(cli.model).views)
    print(
        f"wrote {out}: {args.num_images} originals with the crop box of each view, then {views} rows of views"
    )
    return out
