"""``selfsup data optimize SRC DST --image_size N [--format raw|jpeg]``: the command line of
:func:`selfsup.data.streaming.optimize_folder`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from selfsup.arguments import CommandParser


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
