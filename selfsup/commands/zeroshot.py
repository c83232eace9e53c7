"""``selfsup zeroshot CHECKPOINT [--data.source ...] [--classnames ...] [--templates ...]``: zero-shot
classification of a labelled split by text, with a :class:`selfsup.CLIP` checkpoint's two towers
(open_clip's zero-shot classifier builder, :mod:`selfsup.eval.zeroshot`). Writes a table to the
terminal, ``zeroshot.json`` and ``zeroshot_confusion.png`` in the report folder.

On image-caption pairs (``csv`` / ``jsonl`` / ``webdataset`` data, whose held-out split is
``val_root``) and no ``--classnames``, it reports retrieval instead: image->text and text->image
recall@1/5/10 and the median rank (:mod:`selfsup.eval.retrieval`), in a table and ``retrieval.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from selfsup.arguments import CommandParser


@dataclass
class ZeroShotData:
    """Data to classify; every field left unset comes from the checkpoint's own training data."""

    source: (
        Literal["digits", "folder", "cifar10", "cifar100", "stl10", "csv", "jsonl", "webdataset"] | None
    ) = None
    root: str | None = None
    val_root: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    val_subset: int | None = None
    split: Literal["train", "val"] = "val"


def zeroshot_parser() -> CommandParser:
    parser = CommandParser(
        "zeroshot", description="zero-shot top-1 / top-5 of a CLIP checkpoint on a labelled split."
    )
    parser.add_argument("checkpoint", help="a selfsup.CLIP checkpoint (.ckpt)")
    parser.add_class_arguments(ZeroShotData, "data")
    parser.add_argument("--classnames", type=list[str] | str | None, default=None,
                        help="class names (a list, or a file of one name a line; default: the data's)")  # fmt: skip
    parser.add_argument("--templates", type=list[str] | str | None, default=None,
                        help="caption templates with '{}' (a list or a file; default: the data's)")  # fmt: skip
    parser.add_argument("--out", type=str | None, default=None, metavar="DIR",
                        help="report folder (default: <run>/zeroshot)")  # fmt: skip
    parser.add_argument("--device", type=str, default="auto")
    return parser


def _lines(value: list[str] | str | None) -> list[str] | None:
    if isinstance(value, str):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"'{value}' is not a file: pass a file of one entry a line, or a list.")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(value) if value is not None else None


def zeroshot(
    checkpoint: str, data: dict[str, Any], classnames=None, templates=None, out=None, device="auto"
) -> dict:
    import torch
    from rich.console import Console
    from rich.table import Table

    from selfsup.contract import data_arguments, load_checkpoint
    from selfsup.data.image_text import ImageTextDataModule
    from selfsup.eval.linear_probe import topk_accuracy
    from selfsup.eval.plots import confusion_matrix_png
    from selfsup.eval.zeroshot import zero_shot_classifier, zero_shot_predictions
    from selfsup.methods.clip import CLIP

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    ckpt = load_checkpoint(checkpoint)
    model = CLIP.from_checkpoint(ckpt)
    model.to(device)
    split = data.pop("split", "val")
    saved = {
        k: v
        for k, v in data_arguments(ckpt).items()
        if k
        in (
            "source",
            "root",
            "val_root",
            "image_key",
            "caption_key",
            "csv_separator",
            "batch_size",
            "num_workers",
            "classnames",
            "templates",
            "classes",
        )
    }
    saved.update({k: v for k, v in data.items() if v is not None})
    saved.update(image_size=model.image_size, context_length=model.context_length)
    datamodule = ImageTextDataModule(**saved)
    folder = Path(out) if out else Path(checkpoint).resolve().parent.parent / "zeroshot"
    if datamodule.paired and classnames is None:
        return _retrieval(model, datamodule, split, checkpoint, folder, device)
    names = _lines(classnames) or datamodule.classnames
    prompts = _lines(templates) or datamodule.templates
    classifier = zero_shot_classifier(model, names, prompts, model.context_length, device)
    loader = datamodule.eval_dataloader(split)
    logits, labels = zero_shot_predictions(model, loader, classifier, model.mean, model.std, device)
    scores = {f"top{k}": v for k, v in topk_accuracy(logits, labels).items()}
    n = len(names)
    confusion = torch.bincount(labels.cpu() * n + logits.argmax(1).cpu(), minlength=n * n).reshape(n, n)
    folder.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(checkpoint), "split": split, "samples": len(labels), "classnames": names,
              "templates": prompts, **scores}  # fmt: skip
    (folder / "zeroshot.json").write_text(json.dumps(report, indent=2))
    confusion_matrix_png(confusion, names, folder / "zeroshot_confusion.png", title=f"zero-shot, {split}")
    table = Table(title=f"zero-shot on the {split} split ({len(labels)} images, {n} classes)")
    for column in ("checkpoint", "top-1", "top-5"):
        table.add_column(column)
    table.add_row(Path(checkpoint).name, f"{scores['top1']:.1%}", f"{scores['top5']:.1%}")
    Console().print(table)
    print(f"report: {folder}")
    return report


def _retrieval(model, datamodule, split: str, checkpoint: str, folder: Path, device) -> dict:
    """Image->text and text->image recall@1/5/10 on a split of image-caption pairs."""
    from rich.console import Console
    from rich.table import Table

    from selfsup.eval.retrieval import RECALL_AT, pair_embeddings, retrieval_metrics

    loader = datamodule.pair_dataloader(split)
    image, text = pair_embeddings(model, loader, model.mean, model.std, device)
    metrics = retrieval_metrics(image, text)
    folder.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(checkpoint), "split": split, "pairs": len(image), **metrics}
    (folder / "retrieval.json").write_text(json.dumps(report, indent=2))
    table = Table(title=f"retrieval on the {split} split ({len(image)} image-caption pairs)")
    for column in ("direction", *(f"R@{k}" for k in RECALL_AT), "median rank"):
        table.add_column(column)
    for name in ("image_to_text", "text_to_image"):
        recalls = (f"{metrics[f'{name}_R@{k}']:.1%}" for k in RECALL_AT)
        table.add_row(name.replace("_to_", " -> "), *recalls, f"{metrics[f'{name}_median_rank']:.0f}")
    Console().print(table)
    print(f"report: {folder}")
    return report


def zeroshot_command(argv: Sequence[str]):
    args = zeroshot_parser().parse_args(list(argv))
    data = asdict(ZeroShotData(**args.data.as_dict())) if args.data else {}
    return zeroshot(args.checkpoint, data, args.classnames, args.templates, args.out, args.device)
