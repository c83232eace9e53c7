"""The export folder's format, read side: what a folder must hold, and its two JSON files.

An export folder (written by ``selfsup export`` and ``selfsup compress``) is a timm / Hugging Face
folder: ``config.json`` (timm's model config) and ``model.safetensors`` (the weights), plus
``selfsup.json`` (what was exported, from what, trained how). The writer is ``selfsup.export``;
readers (``selfsup.load``, ``selfsup.compress``) check folders here, so both agree on one format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from selfsup.contract import CheckpointError

EXPORT_FILES = ("config.json", "model.safetensors")
METADATA_FILE = "selfsup.json"
EXPORT_FORMAT = 2
EXPORT_HINT = "Re-create it with `selfsup export CKPT --out DIR`."


def is_export_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding every file of :data:`EXPORT_FILES`."""
    path = Path(path)
    return path.is_dir() and all((path / f).is_file() for f in EXPORT_FILES)


def read_export(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of an export folder, after checking that the folder is complete.

    Raises:
        FileNotFoundError: no such folder.
        CheckpointError: a file is missing, or ``config.json`` is not timm's config.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"export folder '{path}' does not exist.")
    missing = [f for f in EXPORT_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(
            f"export folder '{path}' lacks {', '.join(missing)} (an export holds {', '.join(EXPORT_FILES)}). "
            + EXPORT_HINT
        )
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"'{path / 'config.json'}' is not valid JSON ({err}): re-create the export."
        ) from None
    if not isinstance(config, dict) or "architecture" not in config:
        raise CheckpointError(
            f"'{path / 'config.json'}' has no 'architecture': not a timm export. " + EXPORT_HINT
        )
    return config


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The folder's ``selfsup.json`` ({} for a plain timm folder without one)."""
    file = Path(path) / METADATA_FILE
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"'{file}' is not valid JSON ({err}): re-create the export.") from None
