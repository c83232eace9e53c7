"""The checkpoint and export contract: what every selfsup checkpoint records, and the one way back
from that record to a model.

Every checkpoint written by a selfsup module (pretraining method or fine-tune) carries, under
:data:`CHECKPOINT_KEY`, a :class:`CheckpointMeta`: which kind of module wrote it, the method, the
spec of the *backbone* (the network that export and probing use: the encoder, or the momentum
teacher's encoder for EMA methods), the state-dict prefix of that backbone, its default pooling and
its preprocessing. :meth:`ModelSpec.build` is the only place a backbone is rebuilt from a spec.

This module is neutral: it imports torch, timm and the encoder factory, never Lightning, the
methods or the fine-tune code, so loading and exporting need none of them (a fine-tune checkpoint
declares how its backbone weights become a plain model's: ``selfsup.backbone_state``).

Formats:
    1  selfsup 0.1 (pretraining and fine-tune checkpoints with two different layouts); read and
       converted in memory by :meth:`CheckpointMeta.from_dict`.
    2  this layout.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

# as_config is re-exported (``x as x``): the methods read their configs through the contract
from selfsup.backbone_state import NotPlainError, legacy_backbone_transform, to_plain
from selfsup.config_values import as_config as as_config
from selfsup.config_values import plain
from selfsup.contract_format1 import FORMAT_1_STATE_KEYS, from_format_1, pair

CHECKPOINT_KEY = "selfsup"
FORMAT = 2

"""``module:function`` that turns a fine-tune checkpoint's backbone weights into a plain timm model's,
given the checkpoint's strategy record. The strategies are fine-tune code, above this module: it is
loaded by name when a fine-tune checkpoint's backbone is read, never imported here, and this module
names no strategy."""

Kind = Literal["pretrain", "finetune"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CheckpointError(ValueError):
    """A file that is not a usable selfsup checkpoint here; the message names the file, the
    problem and the fix."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a backbone without its weights (JSON-serialisable).

    Attributes:
        name: the timm model name (``vit_tiny_patch16_224``, ``resnet50``...).
        model_args: the timm constructor arguments recorded at construction, without
            ``num_classes``, ``img_size`` and ``patch_size``.
        img_size, patch_size: input and patch side of a ViT (None for other models).
        vit: whether the model is a timm ``VisionTransformer``.
    """

    name: str
    model_args: dict[str, Any] = field(default_factory=dict)
    img_size: int | None = None
    patch_size: int | None = None
    vit: bool = True

    @classmethod
    def from_model(cls, model: nn.Module) -> ModelSpec:
        from timm.models import get_model_args
        from timm.models.vision_transformer import VisionTransformer

        args = {
            k: plain(v)
            for k, v in get_model_args(model).items()
            if k not in ("num_classes", "pretrained_cfg_overlay", "img_size", "patch_size")
        }
        name = model.pretrained_cfg.get("architecture") or type(model).__name__
        if isinstance(model, VisionTransformer):
            return cls(
                name,
                args,
                pair(model.patch_embed.img_size),
                pair(model.patch_embed.patch_size),
                vit=True,
            )
        return cls(name, args, vit=False)

    def build(self, pool: str | None = None, num_classes: int = 0, **overrides: Any) -> nn.Module:
        """The model, randomly initialised. ``pool`` sets what calling a ViT returns (timm's
        ``global_pool``; ``avg`` keeps the final norm before pooling, as selfsup's features do);
        ``num_classes > 0`` adds timm's classifier; ``overrides`` go to timm (``drop_path_rate``...)."""
        import timm

        from selfsup.encoders.vit import create_encoder, pool_kwargs

        args = {**self.model_args, **overrides}
        if not self.vit:
            return timm.create_model(self.name, pretrained=False, num_classes=num_classes, **args)
        args.update(pool_kwargs(pool))
        if num_classes == 0:
            return create_encoder(self.name, img_size=self.img_size, patch_size=self.patch_size, **args)
        overlay = {"input_size": (int(args.get("in_chans", 3)), self.img_size, self.img_size)}
        return timm.create_model(
            self.name,
            pretrained=False,
            num_classes=num_classes,
            img_size=self.img_size,
            patch_size=self.patch_size,
            pretrained_cfg_overlay=overlay,
            **args,
        )

    def describe(self) -> str:
        if self.vit:
            return f"{self.name} ({self.img_size} px, {self.patch_size}-px patches)"
        return self.name


@dataclass(frozen=True)
class CheckpointMeta:
    """What a selfsup checkpoint says about itself (stored as a plain dict under ``CHECKPOINT_KEY``).

    Attributes:
        kind: ``pretrain`` (a self-supervised method) or ``finetune``.
        method: the method's registry name (``simclr``, ``mae``, ``dino``...) or ``finetune``.
        backbone: the spec of the network that export and probing use.
        backbone_prefix: the prefix of that network's weights in the state dict (``encoder.``, or
            ``teacher.encoder.`` for a momentum teacher).
        pool: the backbone's default feature pooling (``token`` or ``avg``).
        mean, std: input normalisation (0..1 scale, per channel).
        world_size: processes that trained it.
        task: fine-tune only: ``name`` (classification, segmentation, detection), ``num_classes``,
            the head, the strategy and whatever else the task records.
        pretrained_from: fine-tune only: the export or checkpoint the backbone came from.
        format: the layout version (:data:`FORMAT`).
    """

    kind: Kind
    method: str
    backbone: ModelSpec
    backbone_prefix: str = "encoder."
    pool: str = "token"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    world_size: int = 1
    task: dict[str, Any] = field(default_factory=dict)
    pretrained_from: str | None = None
    format: int = FORMAT

    @property
    def img_size(self) -> int | None:
        return self.backbone.img_size

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Any, path: str | os.PathLike = "<checkpoint>") -> CheckpointMeta:
        """Read a stored record; a format-1 record (selfsup 0.1) is converted in memory."""
        if not isinstance(data, dict):
            raise CheckpointError(f"'{path}': the '{CHECKPOINT_KEY}' record is not a mapping.")
        version = data.get("format", 1)
        if not isinstance(version, int) or version > FORMAT:
            raise CheckpointError(
                f"'{path}' was written by a newer selfsup (checkpoint format {version}; this selfsup reads "
                f"formats 1 to {FORMAT}). Upgrade selfsup (pip install -U selfsup) to read it."
            )
        if version == 1:
            data = from_format_1(data, FORMAT)
        try:
            fields = dict(data)
            fields["backbone"] = ModelSpec(**fields["backbone"])
            fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
            return cls(**fields)
        except (KeyError, TypeError) as err:
            raise CheckpointError(
                f"'{path}' has a damaged '{CHECKPOINT_KEY}' record ({type(err).__name__}: {err}). Use another "
                "checkpoint of the run (last.ckpt or best-*.ckpt)."
            ) from None

    def require(
        self, path: str | os.PathLike, kind: Kind | None = None, method: str | None = None
    ) -> CheckpointMeta:
        """Raise :class:`CheckpointError` unless this checkpoint is of ``kind`` and ``method``."""
        if kind == "pretrain" and self.kind == "finetune":
            raise CheckpointError(
                f"'{path}' is a fine-tune checkpoint ({self.task.get('name')} head), but a pretraining "
                "checkpoint is needed here. Pass the pretraining run's checkpoint, or export the fine-tuned "
                "model with `selfsup export` and use the export folder."
            )
        if kind == "finetune" and self.kind != "finetune":
            raise CheckpointError(
                f"'{path}' is a {self.method} pretraining checkpoint, not a fine-tune checkpoint: fine-tune "
                "from it (model.init_args.backbone: PATH) or export it with `selfsup export`."
            )
        if method is not None and self.method != method:
            raise CheckpointError(
                f"'{path}' is a {self.method} checkpoint, but a {method} checkpoint was expected. Pass a "
                f"checkpoint of a {method} run, or use the {self.method} config to resume this one."
            )
        return self


def upgrade_checkpoint(
    checkpoint: dict[str, Any], path: str | os.PathLike = "<checkpoint>"
) -> CheckpointMeta:
    """Bring a loaded checkpoint dict to the current format in place (record and state-dict keys)
    and return its metadata. Idempotent."""
    record = checkpoint.get(CHECKPOINT_KEY)
    was = record.get("format", 1) if isinstance(record, dict) else None
    meta = CheckpointMeta.from_dict(record, path)
    if was == 1 and meta.kind == "finetune":
        state = checkpoint.get("state_dict", {})
        for old, new in FORMAT_1_STATE_KEYS.items():
            for key in [k for k in state if k.startswith(old)]:
                state[new + key[len(old) :]] = state.pop(key)
    checkpoint[CHECKPOINT_KEY] = meta.to_dict()
    return meta


def _plain_text(text: str) -> str:
    """``text`` without terminal colour codes (torch's messages carry some)."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a selfsup checkpoint safely (``torch.load(weights_only=True)``), upgraded to the
    current format in memory. ``mmap=True`` maps the tensors instead of reading them (a cheap look
    at a large checkpoint).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, not a PyTorch checkpoint, holds pickled objects
            other than tensors and plain containers (refused, never executed), was not written by
            selfsup, or by a newer selfsup.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"'{path}' is a folder, not a checkpoint file: pass a .ckpt file (an export folder is read "
            "with selfsup.load_encoder)."
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist.")
    if not zipfile.is_zipfile(path):  # what torch.save writes; a truncated one has lost its directory
        raise CheckpointError(
            f"'{path}' is not a readable PyTorch checkpoint (truncated or not a checkpoint: it is no zip archive, "
            "as torch.save writes). Re-save it, or use another checkpoint of the run, such as last.ckpt."
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"'{path}' holds pickled objects other than tensors and plain containers; selfsup loads "
            f"checkpoints with torch.load(weights_only=True) and refuses to execute them ({_plain_text(str(err).splitlines()[0])}). "
            "Only load checkpoints from sources you trust, and re-save them as plain state dicts."
        ) from None
    except Exception as err:  # truncated zip, plain text, random bytes: torch raises many types
        raise CheckpointError(
            f"'{path}' is not a readable PyTorch checkpoint (truncated or not a checkpoint: "
            f"{str(err).splitlines()[0]}). Re-save it, or use an earlier checkpoint such as last.ckpt."
        ) from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        keys = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"'{path}' is not a selfsup training checkpoint (expected the keys 'state_dict' and "
            f"'{CHECKPOINT_KEY}', found {keys}). Pass a checkpoint written by `selfsup fit`, or an export folder."
        )
    upgrade_checkpoint(checkpoint, path)
    return checkpoint


def read_meta(checkpoint: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> CheckpointMeta:
    """The metadata of a checkpoint loaded by :func:`load_checkpoint`."""
    return CheckpointMeta.from_dict(checkpoint[CHECKPOINT_KEY], path)


# --- the one reader of Lightning's checkpoint keys: every other module goes through these ---------


def model_weights(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The whole module's weights (Lightning's ``state_dict``), the dict itself (hooks edit it)."""
    return checkpoint["state_dict"]


def set_model_weights(checkpoint: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    """Replace the module's weights in ``checkpoint`` (a module's ``on_save_checkpoint``)."""
    checkpoint["state_dict"] = weights


def model_arguments(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The module's constructor arguments as recorded (Lightning's ``hyper_parameters``)."""
    return dict(checkpoint.get("hyper_parameters") or {})


def data_arguments(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The data module's constructor arguments as recorded (``datamodule_hyper_parameters``)."""
    return dict(checkpoint.get("datamodule_hyper_parameters") or {})


def epochs_trained(checkpoint: dict[str, Any]) -> int:
    """Training epochs whose batches were all processed when ``checkpoint`` was written (Lightning's
    ``epoch`` field is the index of the epoch in progress, one less at the end of an epoch)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", 0))


def backbone_state_dict(
    checkpoint: dict[str, Any], meta: CheckpointMeta, path: str | os.PathLike = "<checkpoint>"
) -> dict[str, torch.Tensor]:
    """The backbone's weights (``meta.backbone_prefix`` removed) from a checkpoint's state dict."""
    prefix = meta.backbone_prefix
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(
            f"'{path}' has no backbone weights (no '{prefix}*' keys in its state_dict): the file is damaged; "
            "use another checkpoint of the run."
        )
    return state


def load_backbone_weights(
    model: nn.Module, state: dict[str, torch.Tensor], spec: ModelSpec, path: str | os.PathLike
) -> nn.Module:
    """``model.load_state_dict(state)`` with a :class:`CheckpointError` naming the file and the
    architecture when the weights do not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"'{path}': the weights do not fit {spec.describe()}: {str(err).splitlines()[0]}"
        ) from None
    return model


def plain_backbone_state(
    checkpoint: dict[str, Any], meta: CheckpointMeta, path: str | os.PathLike = "<checkpoint>"
) -> dict[str, torch.Tensor]:
    """The backbone's weights as a plain timm model has them. A fine-tune's weights go through the
    transform its checkpoint declares (``selfsup.backbone_state``): LoRA's adapters merged into the
    weights; adapter and prompt fine-tunes refused (their backbones are not plain timm)."""
    state = backbone_state_dict(checkpoint, meta, path)
    if meta.kind != "finetune":
        return state
    transform = meta.task.get("backbone_transform") or legacy_backbone_transform(meta.task.get("strategy"))
    try:
        return to_plain(state, transform, str(path))
    except NotPlainError as err:
        raise CheckpointError(str(err)) from None
