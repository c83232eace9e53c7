"""``selfsup compress EXPORT --out DIR [--int8] [--prune AMOUNT [--prune_mode ...] [--finetune_steps N]]
[--onnx] [--data.source digits ...]``: the command line of :func:`selfsup.compress.api.compress`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from jsonargparse import ActionConfigFile

from selfsup.arguments import CommandParser, add_flag


@dataclass
class CompressData:
    """Labelled data for the accuracy columns and the recovery fine-tune (``selfsup.ImageDataModule``
    arguments; the image size is the export's). Leave ``source`` unset for a table without accuracy."""

    source: Literal["digits", "folder", "cifar10", "cifar100", "stl10", "streaming"] | None = None
    root: str | None = None
    batch_size: int = 256
    num_workers: int = 0
    train_subset: int | None = None
    val_subset: int | None = None
    subset_seed: int = 0


def compress_parser() -> CommandParser:
    parser = CommandParser(
        "compress",
        description=(
            "Int8, pruned and ONNX versions of an export folder, each in its own sub-folder of --out with "
            "the way to load it, and a table (printed, compress.csv, compress.png) of size, CPU latency "
            "and kNN / linear-probe accuracy of the original and every variant, measured in one run."
        ),
    )
    parser.add_argument("-c", "--config", action=ActionConfigFile)
    parser.add_argument("export", help="an export folder (selfsup export CKPT --out DIR)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    add_flag(parser, "int8", "int8 linear layers (torchao); with --onnx also ONNX int8")
    parser.add_argument(
        "--int8_mode",
        type=Literal["dynamic", "weight_only"] | None,
        default=None,
        help="weight_only: int8 weights (default; float32 speed on a CPU); dynamic: int8 weights and "
        "activations (int8 kernels on GPUs; ~10x slower than float32 on a CPU)",
    )
    parser.add_argument("--prune", type=float | None, default=None, help="fraction to prune, in (0, 1)")
    parser.add_argument(
        "--prune_mode",
        type=Literal["unstructured", "heads", "mlp"] | None,
        default=None,
        help="unstructured (global L1, default), heads (attention heads) or mlp (MLP channels)",
    )
    parser.add_argument(
        "--finetune_steps", type=int, default=0, help="recovery fine-tune steps (needs --data)"
    )
    parser.add_argument("--finetune_lr", type=float, default=1e-4)
    add_flag(parser, "onnx", "ONNX export with an onnxruntime parity check")
    parser.add_argument("--onnx_atol", type=float, default=1e-4)
    parser.add_argument("--onnx_rtol", type=float, default=1e-3)
    parser.add_argument("--data", type=CompressData, default=CompressData())
    parser.add_argument("--knn_k", type=int, default=20)
    parser.add_argument("--probe_epochs", type=int, default=100)
    parser.add_argument("--latency_batches", type=list[int], default=[1, 32])
    parser.add_argument("--latency_repeats", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int | None,
        default=None,
        help="torch and onnxruntime threads for the timings, reported in the table (default: the physical "
        "cores this process may run on)",
    )
    parser.add_argument("--device", type=str, default="cpu", help="device of the recovery fine-tune")
    parser.add_argument("--seed", type=int, default=0)
    add_flag(
        parser,
        "overwrite",
        "replace --out if it holds an earlier compress output (a folder holding anything else is refused)",
    )
    return parser


def compress_command(argv: Sequence[str]):
    from selfsup.compress.api import compress

    args = compress_parser().parse_args(list(argv))
    data = args.data.as_dict() if hasattr(args.data, "as_dict") else asdict(args.data)
    return compress(
        args.export,
        args.out,
        int8=args.int8,
        int8_mode=args.int8_mode,
        prune=args.prune,
        prune_mode=args.prune_mode,
        finetune_steps=args.finetune_steps,
        finetune_lr=args.finetune_lr,
        onnx=args.onnx,
        onnx_atol=args.onnx_atol,
        onnx_rtol=args.onnx_rtol,
        data=data if data.get("source") else None,
        knn_k=args.knn_k,
        probe_epochs=args.probe_epochs,
        latency_batches=tuple(args.latency_batches),
        latency_repeats=args.latency_repeats,
        threads=args.threads,
        device=args.device,
        seed=args.seed,
        overwrite=args.overwrite,
    )
