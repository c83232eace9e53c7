"""Checkpoint → a folder that plain timm (and Hugging Face transformers) load (``selfsup.load``'s
``load_encoder`` reads either).

An export folder holds:
    config.json        timm's model config: architecture, image and patch size, mean/std, pooling
    model.safetensors  the backbone's weights only (no projection head, no decoder, no student);
                       no pickle
    selfsup.json       metadata: method, pretraining recipe, data, epochs, probe scores if known

and loads anywhere, without selfsup, with ``timm.create_model("local-dir:DIR", pretrained=True)``
or ``transformers.AutoModel.from_pretrained(DIR)`` (a ``TimmWrapperModel``; its ``pooler_output``
equals timm's output). Calling the timm model returns the pooled features (``num_classes=0``); the
pooling recorded in the export is the method's declared default (class token for SimCLR and DINO,
mean of patch tokens for MAE) unless chosen otherwise. The exported network is the method's
declared backbone: the encoder, or the momentum teacher's encoder for DINO and MoCo v3.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from selfsup.contract import (
    CheckpointError,
    CheckpointMeta,
    data_arguments,
    epochs_trained,  # re-exported: it lived here before selfsup.contract
    load_checkpoint,
    model_arguments,
    plain,
    read_meta,
)
from selfsup.export_format import (
    EXPORT_FILES,
    EXPORT_FORMAT,
    METADATA_FILE,
    read_export,  # noqa: F401 (re-exported: it lived here before)
)
from selfsup.load import load_encoder
from selfsup.output_folder import check_target, move_into_place, staging_folder

# everything an export of any kind writes (a fine-tune adds its head or the rest of its detector):
# what --overwrite may replace
EXPORT_WRITES = (*EXPORT_FILES, METADATA_FILE, "head.safetensors", "detector.safetensors", "open_clip")
EXPORT_WHAT = "an export"


def export(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    pool: str | None = None,
    probe_scores: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir`` (see the module docstring) from a selfsup checkpoint: a pretraining
    checkpoint exports its backbone; a fine-tune checkpoint exports the fine-tuned model with its
    head (see ``selfsup.finetune.export``).

    The folder is assembled beside ``out_dir`` and moved into place in one rename, so a crash never
    leaves a half-written export. ``overwrite`` replaces an earlier export only: a folder that holds
    anything an export does not write (``EXPORT_WRITES``) is refused, and nothing in it is deleted.
    ``probe_scores`` (e.g. from ``selfsup probe``) go into the metadata.
    """
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    check_target(out_dir, overwrite, EXPORT_WRITES, EXPORT_WHAT)
    checkpoint = load_checkpoint(checkpoint_path)
    meta = read_meta(checkpoint, checkpoint_path)
    if meta.kind != "pretrain":
        raise CheckpointError(
            f"'{checkpoint_path}' is a {meta.kind} checkpoint: export it with selfsup.export(...) (or "
            "`selfsup export`), which exports either kind; this function writes pretraining backbones."
        )
    pool = pool or meta.pool
    encoder = load_encoder(checkpoint, pool=pool, path=checkpoint_path)
    metadata = export_metadata(checkpoint, meta, checkpoint_path, pool=pool, probe=probe_scores or {})
    return write_export(
        out_dir, encoder, f"selfsup_{meta.method}", meta.mean, meta.std, metadata, overwrite=overwrite
    )


def export_metadata(
    checkpoint: dict[str, Any], meta: CheckpointMeta, source: str | os.PathLike, **extra: Any
) -> dict[str, Any]:
    """``selfsup.json``: what was exported, from what, trained how."""
    hparams = model_arguments(checkpoint)
    return {
        "format": EXPORT_FORMAT,
        "kind": meta.kind,
        "method": meta.method,
        "backbone": plain(meta.backbone),
        "pool": meta.pool,
        "mean": list(meta.mean),
        "std": list(meta.std),
        "recipe": {k: v for k, v in hparams.items() if not k.startswith("_")},
        "data": data_arguments(checkpoint),
        "epochs": epochs_trained(checkpoint),
        "global_step": checkpoint.get("global_step"),
        "source_checkpoint": str(source),
        **extra,
    }


def write_export(
    out_dir: str | os.PathLike,
    model: nn.Module,
    tag: str,
    mean,
    std,
    metadata: dict[str, Any],
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a timm folder for ``model`` (config.json, model.safetensors), ``selfsup.json`` and any
    ``extra`` safetensors files. The folder is assembled beside ``out_dir`` and moved into place in one
    rename, so a crash never leaves a half-written export; with ``overwrite`` it replaces an earlier
    export, never a folder holding anything else (see ``selfsup.output_folder``). Folders and files
    get the permissions of the umask, as ``mkdir`` and ``open`` give.

    ``config.json``'s ``model_args`` leave out ``num_classes`` (it is a top-level field): Hugging Face
    transformers' ``TimmWrapperModel`` passes both and fails on the duplicate."""
    from timm.models import save_for_hf

    out_dir = Path(out_dir)
    written = (*EXPORT_WRITES, *(extra or {}))
    check_target(out_dir, overwrite, written, EXPORT_WHAT)
    staging = staging_folder(out_dir)
    try:
        save_for_hf(
            model.eval(),
            str(staging),
            safe_serialization=True,
            model_config={
                "pretrained_cfg": {"tag": tag, "license": None, "mean": tuple(mean), "std": tuple(std)}
            },
        )
        config_file = staging / "config.json"
        config = json.loads(config_file.read_text())
        config.get("model_args", {}).pop("num_classes", None)
        config_file.write_text(json.dumps(config, indent=2))
        for name, tensors in (extra or {}).items():
            save_file(tensors, staging / name)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
        move_into_place(staging, out_dir, overwrite, written, EXPORT_WHAT)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
