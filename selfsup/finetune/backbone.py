"""The backbone of a fine-tune: a selfsup export or checkpoint, or any timm model (ViT or CNN), and
the two feature views a task head reads (pooled, dense)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from selfsup.encoders import NotAVisionTransformer, create_encoder, is_vit_name


def load_backbone(
    backbone: str,
    img_size: int | None = None,
    patch_size: int | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A backbone without classifier.

    ``backbone`` is an export folder or a selfsup ``.ckpt`` (the pretrained encoder, via
    :func:`selfsup.export.load_encoder`), ``local-dir:DIR`` (any timm folder), or a timm model name
    (randomly initialised: this machine loads no weights from the network). ``img_size`` and
    ``patch_size`` apply to ViT names only; ``backbone_kwargs`` go to timm (``drop_path_rate``...).
    """
    kwargs = dict(backbone_kwargs or {})
    path = Path(backbone)
    if backbone.startswith("local-dir:"):
        return timm.create_model(backbone, pretrained=True, num_classes=0, **kwargs)
    if not path.exists() and (path.suffix == ".ckpt" or _looks_like_a_path(backbone)):
        raise FileNotFoundError(missing_backbone(path))
    if path.is_dir() or path.suffix == ".ckpt":
        from selfsup.export import load_encoder

        encoder = load_encoder(path, img_size=img_size, patch_size=patch_size, **kwargs)
        return encoder.train()
    if not timm.is_model(backbone):
        return create_encoder(backbone)  # raises the unknown-name error, with suggestions
    if is_vit_name(backbone):
        try:
            return create_encoder(backbone, img_size=img_size, patch_size=patch_size, **kwargs)
        except NotAVisionTransformer:
            pass
    if patch_size is not None:
        raise ValueError(f"patch_size applies to ViT backbones; {backbone!r} has no patches: leave it unset.")
    # a CNN takes images of any size: img_size (linked from the data) has nothing to set
    return timm.create_model(backbone, pretrained=False, num_classes=0, **kwargs)


def _looks_like_a_path(backbone: str) -> bool:
    """A folder or file rather than a timm name: timm names hold no ``/`` (``hf-hub:org/name`` is
    a timm name with a prefix)."""
    return ("/" in backbone or os.sep in backbone or backbone.startswith((".", "~"))) and not re.match(
        r"^[\w-]+:", backbone
    )


def _run_version(checkpoint: Path) -> int:
    """N of ``RUN/version_N/checkpoints/last.ckpt`` (-1 for another name)."""
    suffix = checkpoint.parent.parent.name.removeprefix("version_")
    return int(suffix) if suffix.isdigit() else -1


def missing_backbone(path: Path) -> str:
    """What to do about a backbone path that does not exist: most often the export of the
    pretraining run (``runs/NAME/export``) has not been made yet."""
    if path.suffix == ".ckpt":
        return (
            f"backbone checkpoint '{path}' does not exist: check the path (a run keeps its checkpoints in "
            "RUN/version_N/checkpoints/)."
        )
    checkpoints = sorted(path.parent.glob("version_*/checkpoints/last.ckpt"), key=_run_version)
    if checkpoints:
        return (
            f"backbone '{path}' does not exist: the pretraining run has not been exported yet. Make it with "
            f"`selfsup export {checkpoints[-1]} --out {path}`, or set the backbone to that checkpoint."
        )
    return (
        f"backbone '{path}' does not exist: no export folder (or checkpoint) there. Pretrain, then make the "
        f"export with `selfsup export RUN/version_N/checkpoints/last.ckpt --out {path}`; or set the backbone "
        "to a selfsup .ckpt or a timm model name."
    )


def pool_output(backbone: nn.Module, out: torch.Tensor, num_prefix: int, pool: str) -> torch.Tensor:
    """Pooled ``[B, D]`` features from the backbone's output: a ViT's tokens ``[B, N, D]`` (``token``:
    the class token; ``avg``: the mean of the tokens after the first ``num_prefix``), or a CNN's
    feature map ``[B, C, h, w]`` (timm's own pooling)."""
    if out.ndim == 4:
        return backbone.forward_head(out, pre_logits=True)
    if pool == "token":
        return out[:, 0]
    return out[:, num_prefix:].mean(dim=1)


def dense_output(out: torch.Tensor, num_prefix: int, grid: tuple[int, int] | None) -> torch.Tensor:
    """``[B, D, h, w]`` per-location features: a CNN's map as is; a ViT's patch tokens on their grid."""
    if out.ndim == 4:
        return out
    patches = out[:, num_prefix:]
    b, length, d = patches.shape
    gh, gw = grid
    if gh * gw != length:
        raise ValueError(f"{length} patch tokens do not fill the {gh}x{gw} patch grid.")
    return patches.transpose(1, 2).reshape(b, d, gh, gw)
