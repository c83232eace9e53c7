"""What every compressed variant shares: the build context, the variant record, its README and metadata.

A ``build_*`` function (``variant_int8``, ``variant_pruned``, ``variant_onnx``) writes one artefact
folder in the staging folder, reloads it the documented way, and returns a :class:`Variant`: the
forward the table measures, the files its size counts, and the record ``selfsup.json`` keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from rich.progress import Progress
from torch import nn

from selfsup.compress.source import Source

README_FILE = "README.txt"


@dataclass(frozen=True)
class BuildContext:
    """What every variant is built from: the source export, where to write, and what to check it on.

    ``sample`` is the batch each artefact is compared to the original on; ``generator`` is the seeded
    generator that drew it (when there is no data) and later draws the latency batches; ``threads``
    are onnxruntime's intra-op threads; ``device`` is where the recovery fine-tune runs.
    """

    source: Source
    staging: Path
    progress: Progress
    normalize: nn.Module
    datamodule: Any  # selfsup.data.ImageDataModule or None
    pool: str
    sample: torch.Tensor
    generator: torch.Generator
    threads: int
    device: str


class Variant(NamedTuple):
    """One row of the table: its name, forward, artefact files (for the size), how it loads, and notes.

    ``record`` is what ``selfsup.json`` and ``compress.json`` keep about it (``None`` for the original).
    """

    name: str
    forward: Any
    paths: list[Path]
    load_with: str
    notes: str
    record: dict[str, Any] | None = None


def write_readme(folder: Path, title: str, load: str, lines: list[str]) -> None:
    """Write the artefact's ``README.txt``: a title, what was done, and how to load it."""
    text = "\n".join(
        [title, "", *lines, "", "Load it (paths relative to the compress output folder):", "", load, ""]
    )
    (folder / README_FILE).write_text(text)


def artefact_metadata(source: Source, record: dict[str, Any], load: str, pool: str) -> dict[str, Any]:
    """The ``selfsup.json`` of an artefact that is not a timm export (int8, onnx, onnx_int8)."""
    return {
        "kind": "compressed",
        "source_export": str(source.path.resolve()),
        "architecture": source.config.get("architecture"),
        "pool": pool,
        "mean": list(source.mean),
        "std": list(source.std),
        "input_size": list(source.input_size),
        "compression": record,
        "load": load,
        "source_metadata": source.metadata,
    }
