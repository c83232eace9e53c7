"""``selfsup export CHECKPOINT --out DIR [--pool token|avg] [--probe probe.json] [--overwrite]``: the
command line of :func:`selfsup.export.export`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from selfsup.arguments import CommandParser, add_flag


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
    from selfsup.exporting import export

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
