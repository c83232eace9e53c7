"""``selfsup probe CHECKPOINT_OR_RUN... [--data.source ...] [--k 20 200] [--probe_epochs 100]
[--embedding_plot]``: the command line of :func:`selfsup.eval.probe.probe`, and of
:func:`selfsup.eval.embedding_plot.embedding_plots` after it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from jsonargparse import ActionConfigFile, ActionYesNo

from selfsup.arguments import CommandParser


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
    # add_flag's ActionYesNo, with the spelling --embedding-plot accepted too
    parser.add_argument(
        "--embedding_plot",
        "--embedding-plot",
        action=ActionYesNo,
        nargs="?",
        default=False,
        help="also draw each encoder's held-out features in 2-D (UMAP, or t-SNE without umap-learn), "
        "coloured by class: embedding_<checkpoint>.png in the report folder",
    )
    return parser


def probe_command(argv: Sequence[str]):
    from selfsup.eval.probe import probe

    args = probe_parser().parse_args(list(argv))
    data = asdict(DataOverrides(**args.data.as_dict())) if args.data else {}
    results = probe(
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
    if args.embedding_plot:
        from selfsup.eval.embedding_plot import embedding_plots, report_folder
        from selfsup.eval.probe_cache import default_cache_folder

        folder = report_folder(args.checkpoints, args.out)
        embedding_plots(results, folder, args.cache_dir or default_cache_folder())
    return results
