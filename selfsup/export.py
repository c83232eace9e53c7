"""Training checkpoint → a folder that plain timm loads; and ``load_encoder`` for either.

An export folder holds:
    config.json        timm's model config: architecture, image and patch size, mean/std, pooling
    model.safetensors  the encoder's weights only (no projection head, no decoder); no pickle
    selfsup.json       metadata: method, pretraining recipe, data, epochs, probe scores if known

and loads anywhere with ``timm.create_model("local-dir:DIR", pretrained=True)``, without selfsup.
Calling the model returns the pooled features (``num_classes=0``); the pooling recorded in the
export is the method's default (class token for SimCLR, mean of patch tokens for MAE) unless
chosen otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from timm.models import save_for_hf
from timm.models.vision_transformer import VisionTransformer

from selfsup.checkpoint import CheckpointError, epochs_trained, load_checkpoint
from selfsup.encoders import create_encoder

EXPORT_FILES = ("config.json", "model.safetensors")
METADATA_FILE = "selfsup.json"


def encoder_state_dict(checkpoint: dict[str, Any], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``encoder.*`` weights of a training checkpoint, with the prefix removed."""
    state = {k[len("encoder.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("encoder.")}
    if not state:
        raise CheckpointError(f"'{path}' has no encoder weights (no 'encoder.*' keys in its state_dict).")
    return state


def build_encoder(spec: dict[str, Any], pool: str | None = None, **model_kwargs: Any) -> VisionTransformer:
    """The encoder described by a checkpoint's spec; with ``pool``, timm's ``global_pool`` is set so that
    calling the model returns those features (``avg`` keeps the final norm before pooling).
    ``model_kwargs`` (e.g. ``drop_path_rate``) go to timm."""
    args = dict(spec["model_args"], **model_kwargs)
    if pool is not None:
        args["global_pool"] = pool
        if pool == "avg":
            args["fc_norm"] = False  # pooled = mean of normed tokens, exactly what selfsup's features are
    return create_encoder(spec["name"], img_size=spec["img_size"], patch_size=spec["patch_size"], **args)


def _check_expected(path: Path, spec: dict[str, Any], method: str | None, expected: dict[str, Any]) -> None:
    if method is not None and spec.get("method") not in (None, method):
        raise CheckpointError(
            f"'{path}' is a {spec.get('method')} checkpoint, but a {method} checkpoint was expected."
        )
    for key, want in expected.items():
        if want is None:
            continue
        have = spec[key]
        if have != want:
            raise CheckpointError(
                f"'{path}' holds a {spec['name']} encoder with {key}={have!r}, but {key}={want!r} was expected. "
                "Use the checkpoint of that architecture, or ask for the one it holds."
            )


def load_encoder(
    path: str | os.PathLike,
    name: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    method: str | None = None,
    pool: str | None = None,
    **model_kwargs: Any,
) -> VisionTransformer:
    """The pretrained timm encoder from an export folder or a selfsup training checkpoint.

    Args:
        path: an export folder (``config.json`` + ``model.safetensors``) or a ``.ckpt`` file.
        name, img_size, patch_size: the architecture the caller expects; a mismatch is a
            :class:`~selfsup.checkpoint.CheckpointError` naming the file and both values.
        method: the pretraining method expected (``simclr``, ``mae``), checked likewise.
        pool: feature pooling of the returned model (checkpoints only; an export keeps its own).
        **model_kwargs: further timm arguments (e.g. ``drop_path_rate`` for fine-tuning).

    The returned model is in eval mode; ``model(images)`` gives pooled features.
    """
    path = Path(path)
    expected = {"name": name, "img_size": img_size, "patch_size": patch_size}
    if path.is_dir():
        missing = [f for f in EXPORT_FILES if not (path / f).is_file()]
        if missing:
            raise CheckpointError(
                f"export folder '{path}' lacks {', '.join(missing)} (an export holds {', '.join(EXPORT_FILES)}). "
                "Re-create it with `selfsup export CKPT --out DIR`."
            )
        import timm

        config = json.loads((path / "config.json").read_text())
        args = config.get("model_args", {})
        size = args.get("img_size", [None])
        spec = {
            "name": config.get("architecture"),
            "img_size": size[0] if isinstance(size, list) else size,
            "patch_size": args.get("patch_size"),
        }
        meta_file = path / METADATA_FILE
        if meta_file.is_file():
            spec["method"] = json.loads(meta_file.read_text()).get("method")
        _check_expected(path, spec, method, expected)
        try:
            model = timm.create_model(f"local-dir:{path}", pretrained=True, **model_kwargs)
        except (RuntimeError, ValueError, OSError) as err:
            raise CheckpointError(f"export folder '{path}' could not be loaded by timm: {err}") from None
        return model.eval()
    checkpoint = load_checkpoint(path)
    meta = checkpoint["selfsup"]
    if meta.get("method") == "finetune":
        raise CheckpointError(
            f"'{path}' is a fine-tune checkpoint: rebuild it with "
            "selfsup.finetune.FineTune.from_checkpoint, or export it with `selfsup export`."
        )
    spec = dict(meta["encoder"], method=meta.get("method"))
    _check_expected(path, spec, method, expected)
    encoder = build_encoder(meta["encoder"], pool or meta.get("pool"), **model_kwargs)
    try:
        encoder.load_state_dict(encoder_state_dict(checkpoint, path))
    except RuntimeError as err:
        raise CheckpointError(
            f"'{path}': the encoder weights do not fit {meta['encoder']['name']}: {err}"
        ) from None
    return encoder.eval()


def export(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    pool: str | None = None,
    probe_scores: dict[str, float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir`` (see the module docstring) from a selfsup training checkpoint.

    The folder is assembled beside ``out_dir`` and moved into place in one rename, so a crash never
    leaves a half-written export. ``probe_scores`` (e.g. from ``selfsup probe``) go into the metadata.
    """
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"'{out_dir}' exists; pass overwrite=True (--overwrite) to replace it.")
    checkpoint = load_checkpoint(checkpoint_path)
    meta = checkpoint["selfsup"]
    pool = pool or meta.get("pool", "token")
    encoder = load_encoder(checkpoint_path, pool=pool)
    hparams = checkpoint.get("hyper_parameters", {})
    metadata = {
        "format": 1,
        "method": meta.get("method"),
        "encoder": meta["encoder"],
        "pool": pool,
        "mean": meta.get("mean"),
        "std": meta.get("std"),
        "recipe": {k: v for k, v in hparams.items() if not k.startswith("_")},
        "data": checkpoint.get("datamodule_hyper_parameters", {}),
        "epochs": epochs_trained(checkpoint),
        "global_step": checkpoint.get("global_step"),
        "probe": probe_scores or {},
        "source_checkpoint": str(checkpoint_path),
    }
    return write_export(
        out_dir, encoder, f"selfsup_{meta.get('method')}", meta["mean"], meta["std"], metadata
    )


def write_export(
    out_dir: Path,
    model,
    tag: str,
    mean,
    std,
    metadata: dict[str, Any],
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a timm folder for ``model`` (config.json, model.safetensors), ``selfsup.json`` and any
    ``extra`` safetensors files. The folder is assembled beside ``out_dir`` and moved into place in one
    rename (replacing an older export), so a crash never leaves a half-written export."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_for_hf(
            model.eval(),
            str(staging),
            safe_serialization=True,
            model_config={
                "pretrained_cfg": {"tag": tag, "license": None, "mean": tuple(mean), "std": tuple(std)}
            },
        )
        for name, tensors in (extra or {}).items():
            save_file(tensors, staging / name)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
