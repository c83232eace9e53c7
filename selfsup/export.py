"""Checkpoint → a folder that plain timm (and Hugging Face transformers) load; ``load_encoder`` for
either.

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

import importlib
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
    build_backbone,
    data_arguments,
    epochs_trained,  # re-exported: it lived here before selfsup.contract
    load_checkpoint,
    model_arguments,
    plain,
    read_meta,
)
from selfsup.output_folder import check_target, move_into_place, staging_folder

EXPORT_FILES = ("config.json", "model.safetensors")
METADATA_FILE = "selfsup.json"
# everything an export of any kind writes (a fine-tune adds its head or the rest of its detector):
# what --overwrite may replace
EXPORT_WRITES = (*EXPORT_FILES, METADATA_FILE, "head.safetensors", "detector.safetensors")
EXPORT_WHAT = "an export"
EXPORT_FORMAT = 2
KIND_EXPORTERS = {"finetune": "selfsup.finetune.export:export_finetuned"}
"""``module:function`` exporting each checkpoint kind besides pretraining. A fine-tune's export builds on
this module (``write_export``, ``export_metadata``) and sits above it: it is loaded by name when such a
checkpoint is exported, never imported here."""


def _check_expected(path: Path, found: dict[str, Any], method: str | None, expected: dict[str, Any]) -> None:
    if method is not None and found.get("method") not in (None, method):
        raise CheckpointError(
            f"'{path}' is a {found.get('method')} checkpoint, but a {method} checkpoint was expected."
        )
    for key, want in expected.items():
        if want is None:
            continue
        have = found[key]
        if have != want:
            raise CheckpointError(
                f"'{path}' holds a {found['name']} encoder with {key}={have!r}, but {key}={want!r} was expected. "
                "Use the checkpoint of that architecture, or ask for the one it holds."
            )


def read_export(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of an export folder, after checking that the folder is complete."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"export folder '{path}' does not exist.")
    missing = [f for f in EXPORT_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(
            f"export folder '{path}' lacks {', '.join(missing)} (an export holds {', '.join(EXPORT_FILES)}). "
            "Re-create it with `selfsup export CKPT --out DIR`."
        )
    try:
        return json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"'{path / 'config.json'}' is not valid JSON ({err}): re-create the export."
        ) from None


def load_encoder(
    path: str | os.PathLike,
    name: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    method: str | None = None,
    pool: str | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """The pretrained timm backbone from an export folder or a selfsup checkpoint (pretraining or
    fine-tune: for a fine-tune, its fine-tuned backbone without the task head).

    Args:
        path: an export folder (``config.json`` + ``model.safetensors``) or a ``.ckpt`` file.
        name, img_size, patch_size: the architecture the caller expects; a mismatch is a
            :class:`~selfsup.contract.CheckpointError` naming the file and both values.
        method: the pretraining method expected (``simclr``, ``mae``, ``dino``...), checked likewise.
        pool: feature pooling of the returned model (checkpoints only; an export keeps its own).
        **model_kwargs: further timm arguments (e.g. ``drop_path_rate`` for fine-tuning).

    The returned model is in eval mode; ``model(images)`` gives pooled features.
    """
    path = Path(path)
    expected = {"name": name, "img_size": img_size, "patch_size": patch_size}
    if path.is_dir():
        import timm

        config = read_export(path)
        args = config.get("model_args", {})
        size = args.get("img_size", [None])
        found = {
            "name": config.get("architecture"),
            "img_size": size[0] if isinstance(size, list) else size,
            "patch_size": args.get("patch_size"),
        }
        meta_file = path / METADATA_FILE
        if meta_file.is_file():
            found["method"] = json.loads(meta_file.read_text()).get("method")
        _check_expected(path, found, method, expected)
        try:
            model = timm.create_model(f"local-dir:{path}", pretrained=True, **model_kwargs)
        except (RuntimeError, ValueError, OSError) as err:
            raise CheckpointError(f"export folder '{path}' could not be loaded by timm: {err}") from None
        return model.eval()
    checkpoint = load_checkpoint(path)
    meta = read_meta(checkpoint, path)
    spec = meta.backbone
    found = {
        "name": spec.name,
        "img_size": spec.img_size,
        "patch_size": spec.patch_size,
        "method": meta.method,
    }
    _check_expected(path, found, method, expected)
    return build_backbone(checkpoint, path, pool=pool or meta.pool, **model_kwargs)


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
    if meta.kind in KIND_EXPORTERS:
        module, function = KIND_EXPORTERS[meta.kind].split(":")
        export_kind = getattr(importlib.import_module(module), function)
        return export_kind(checkpoint_path, out_dir, overwrite=overwrite)
    pool = pool or meta.pool
    encoder = build_backbone(checkpoint, checkpoint_path, pool=pool)
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
