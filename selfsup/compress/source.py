"""The export folder ``compress`` reads, and the loader of what it writes.

:func:`read_export` loads an export with plain timm and checks it (clear errors for a missing path,
a checkpoint, or a folder that is not an export); :func:`load_artefact` loads any artefact folder the
way its ``selfsup.json`` documents.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from selfsup.compress.int8 import load_int8
from selfsup.compress.onnx_export import ONNX_FILE, run_onnx, session
from selfsup.contract import CheckpointError
from selfsup.export_format import EXPORT_FILES, METADATA_FILE, read_export_metadata
from selfsup.export_format import read_export as read_export_config
from selfsup.load import load_encoder


class NotAnExport(ValueError):
    """The folder given to ``compress`` is not a selfsup / timm export."""


@dataclass
class Source:
    """An export read by :func:`read_export`: its folder, its timm model, and its recorded preprocessing."""

    path: Path
    model: nn.Module
    config: dict[str, Any]
    metadata: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]


def read_export(export_dir: str | os.PathLike) -> Source:
    """Load an export folder (through :func:`selfsup.load.load_encoder`, plain timm underneath);
    clear errors for a missing path or a folder that is not one."""
    path = Path(export_dir)
    hint = "Pass a folder written by `selfsup export CKPT --out DIR` (config.json + model.safetensors)."
    if not path.exists():
        raise FileNotFoundError(f"export folder '{path}' does not exist. {hint}")
    if not path.is_dir():
        what = "a checkpoint: export it first" if path.suffix == ".ckpt" else "a file, not a folder"
        raise NotAnExport(f"'{path}' is {what}. {hint}")
    try:
        config = read_export_config(path)
        metadata = read_export_metadata(path)
        model = load_encoder(path)
    except CheckpointError as err:
        raise NotAnExport(f"{err} {hint}") from None
    cfg = config.get("pretrained_cfg", {})
    mean = cfg.get("mean") or metadata.get("mean")
    std = cfg.get("std") or metadata.get("std")
    if not mean or not std:
        raise NotAnExport(f"'{path}' records no mean/std (config.json pretrained_cfg): re-export it.")
    input_size = tuple(cfg.get("input_size") or model.pretrained_cfg.get("input_size"))
    return Source(path, model, config, metadata, tuple(mean), tuple(std), input_size)


def load_artefact(folder: str | os.PathLike, threads: int | None = None):
    """A callable ``images [B, C, H, W] float -> features [B, D]`` for an artefact folder written by
    :func:`compress` (or for the original export), loaded the way its ``selfsup.json`` documents."""

    folder = Path(folder)
    method = None
    if (folder / METADATA_FILE).is_file():
        method = json.loads((folder / METADATA_FILE).read_text()).get("compression", {}).get("method")
    if method in ("onnx", "onnx_int8"):
        sess = session(folder / ONNX_FILE, threads)
        return lambda x: run_onnx(sess, x)
    if method == "int8":
        return load_int8(folder)
    if not all((folder / f).is_file() for f in EXPORT_FILES):
        raise NotAnExport(f"'{folder}' is neither an export nor an artefact written by selfsup compress.")
    return load_encoder(folder)
