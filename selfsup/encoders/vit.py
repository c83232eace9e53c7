"""The one encoder every selfsup method shares: a timm ``VisionTransformer`` without classifier.

Encoders are built only through :func:`create_encoder` and used only through timm's public API
(``forward_features``, ``pool``, ``patch_embed``, ``blocks``, ``norm``), so an exported encoder is a
plain timm model and loads without selfsup.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from selfsup.encoders.masking import Masked, random_masking

Pool = Literal["token", "avg"]


class NotAVisionTransformer(ValueError):
    """A timm model name that does not build a ``VisionTransformer``."""


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def create_encoder(
    name: str = "vit_tiny_patch16_224",
    img_size: int | None = None,
    patch_size: int | None = None,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **timm_kwargs: Any,
) -> VisionTransformer:
    """Build a timm Vision Transformer without classifier (``num_classes=0``), randomly initialised
    unless ``pretrained``.

    Args:
        name: any timm ViT name (``timm.list_models("vit_*")``), e.g. ``vit_tiny_patch16_224``.
        img_size: input side in pixels; ``None`` keeps the model's default (224 for most ViTs).
        patch_size: patch side in pixels; ``None`` keeps the model's default. Use 4 for 32-px data.
        pretrained: load the name's weights the way timm resolves them (its cache or the Hugging Face
            hub; this machine reaches no hub, so only what is cached).
        pretrained_file: load the weights from this local file instead (timm's
            ``pretrained_cfg_overlay={"file": ...}``, which also converts the original
            facebookresearch ``.pth`` layouts); implies ``pretrained``.
        **timm_kwargs: further arguments of timm's ``VisionTransformer`` (``drop_path_rate``, ``depth``...).

    Returns:
        A ``timm.models.vision_transformer.VisionTransformer`` whose ``pretrained_cfg`` carries the
        preprocessing facts (mean, std, input size) that selfsup's augmentation and exports use.

    Raises:
        ValueError: the name is not a timm model, the model is not a ViT, or the image size is not
            divisible by the patch size.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown timm model name {name!r}.{hint} List ViTs with `timm.list_models('vit_*')`."
        )
    if "num_classes" in timm_kwargs and timm_kwargs["num_classes"] != 0:
        raise ValueError("create_encoder builds encoders without classifier: do not pass num_classes.")
    timm_kwargs.pop("num_classes", None)
    kwargs: dict[str, Any] = dict(timm_kwargs)
    if img_size is not None:
        kwargs["img_size"] = img_size
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    in_chans = kwargs.get("in_chans", 3)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if img_size is not None:
        # timm's pretrained_cfg is the record of preprocessing facts: keep its input size truthful.
        overlay["input_size"] = (in_chans, *_pair(img_size))
    if pretrained_file is not None:
        overlay["file"] = str(pretrained_file)
        pretrained = True
    if overlay:
        kwargs["pretrained_cfg_overlay"] = overlay
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    if not isinstance(model, VisionTransformer):
        raise NotAVisionTransformer(
            f"{name!r} builds a {type(model).__name__}, but selfsup pretraining needs a timm "
            "VisionTransformer (a 'vit_*' or 'deit_*' name)."
        )
    check_patch_grid(model)
    return model


def pool_kwargs(pool: str | None) -> dict[str, Any]:
    """timm arguments that make calling a ViT return features pooled as ``pool``: ``token`` (the
    class token) or ``avg`` (the mean of the patch tokens after the final norm, as selfsup's features
    are, so timm's ``fc_norm`` is off); ``None`` keeps the model's own."""
    if pool is None:
        return {}
    return {"global_pool": pool, "fc_norm": False} if pool == "avg" else {"global_pool": pool}


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a timm ``VisionTransformer`` (patch tokens, class token, blocks)."""
    return isinstance(model, VisionTransformer)


def is_vit_name(name: str) -> bool:
    """Whether the timm model ``name`` builds a ``VisionTransformer`` (ViT and DeiT families),
    without building it. An unknown name counts as one, so :func:`create_encoder` reports it with
    suggestions."""
    if not timm.is_model(name):
        return True
    return timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1] in ("vision_transformer", "deit")


def check_patch_grid(encoder: VisionTransformer) -> None:
    """Raise ``ValueError`` unless the encoder's image size is a whole number of patches."""
    size = _pair(encoder.patch_embed.img_size)
    patch = _pair(encoder.patch_embed.patch_size)
    if size[0] % patch[0] or size[1] % patch[1]:
        raise ValueError(
            f"Image size {size[0]}x{size[1]} is not divisible by the patch size {patch[0]}x{patch[1]}: "
            f"choose an image size that is a multiple of {patch[0]} (e.g. "
            f"{(size[0] // patch[0]) * patch[0] or patch[0]}) or a patch size that divides {size[0]}."
        )


def data_config(encoder: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """Preprocessing facts from timm's ``pretrained_cfg``: ``{"mean", "std", "input_size"}``. A
    ViT's input size is its patch embedding's; another model (a CNN) takes ``img_size`` or its
    config's size."""
    cfg = encoder.pretrained_cfg
    if isinstance(encoder, VisionTransformer):
        size = _pair(encoder.patch_embed.img_size)
        channels = int(encoder.patch_embed.proj.in_channels)
    else:
        default = cfg.get("input_size", (3, 224, 224))
        size = _pair(img_size) if img_size is not None else (int(default[-2]), int(default[-1]))
        channels = int(default[0])
    return {
        "mean": tuple(float(m) for m in cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(float(s) for s in cfg.get("std", (0.229, 0.224, 0.225))),
        "input_size": (channels, *size),
    }


def default_pool(encoder: nn.Module, preferred: Pool = "token") -> Pool:
    """``preferred`` (a method's declared pooling), or ``avg`` for a model without a class token."""
    if not getattr(encoder, "has_class_token", False):
        return "avg"
    return preferred


def pooled_features(
    encoder: VisionTransformer, images: torch.Tensor, pool: Pool = "token", last_blocks: int = 1
) -> torch.Tensor:
    """``[B, C, H, W]`` normalised images → ``[B, D]`` features after the final norm.

    ``token`` is the class token; ``avg`` is the mean of the patch tokens (prefix tokens excluded).
    With ``last_blocks = n > 1`` the features of the last ``n`` blocks, each through the final norm,
    are concatenated (``[B, n * D]``): DINO's linear evaluation uses the class tokens of the last 4.
    """
    if not isinstance(encoder, VisionTransformer):  # a CNN: timm's own pooling
        return encoder.forward_head(encoder.forward_features(images), pre_logits=True)
    if pool == "token" and not encoder.has_class_token:
        raise ValueError("pool='token' needs a class token; this encoder has none: use pool='avg'.")
    if pool not in ("token", "avg"):
        raise ValueError(f"pool must be 'token' or 'avg', got {pool!r}.")
    if last_blocks == 1:
        return encoder.pool(encoder.forward_features(images), pool_type=pool)
    if not 1 <= last_blocks <= len(encoder.blocks):
        raise ValueError(
            f"last_blocks must lie in [1, {len(encoder.blocks)}] (the encoder's depth), got {last_blocks}."
        )
    outputs = encoder.forward_intermediates(
        images,
        indices=last_blocks,
        norm=True,
        output_fmt="NLC",
        intermediates_only=True,
        return_prefix_tokens=True,
    )
    if pool == "token":
        return torch.cat([prefix[:, 0] for _, prefix in outputs], dim=-1)
    return torch.cat([patches.mean(dim=1) for patches, _ in outputs], dim=-1)


def embed_tokens(
    encoder: VisionTransformer, images: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(prefix tokens [B, P, D] or None, patch tokens [B, L, D])``, both with their position
    embeddings added: the input of the transformer blocks before concatenation. timm's own steps
    (``patch_embed``, then ``_pos_embed``: class and register tokens, the learned or resampled
    position embedding, ``pos_drop``), split after the prefix tokens."""
    tokens = encoder._pos_embed(encoder.patch_embed(images))
    prefix = encoder.num_prefix_tokens
    return (tokens[:, :prefix] if prefix else None), tokens[:, prefix:]


def run_blocks(encoder: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """``norm_pre → blocks → norm`` on a token sequence from :func:`embed_tokens` (what
    ``forward_features`` runs after its ``patch_drop``)."""
    return encoder.norm(encoder.blocks(encoder.norm_pre(tokens)))


def encode_visible(
    encoder: VisionTransformer,
    images: torch.Tensor,
    mask_ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, Masked]:
    """MAE's encoder pass: the transformer blocks see only the visible patch tokens (plus the prefix
    tokens: class and register tokens), which is where MAE's speed comes from.

    Position embeddings are added before masking, so every kept token carries its original position.

    Returns ``(tokens [B, prefix + K, D] after the final norm, Masked)``.
    """
    if not isinstance(encoder.patch_drop, torch.nn.Identity):
        raise ValueError("encode_visible masks patches itself: build the encoder without patch_drop_rate.")
    prefix_tokens, patches = embed_tokens(encoder, images)
    masked = random_masking(patches, mask_ratio, generator)
    return _blocks_on(encoder, prefix_tokens, masked.kept), masked


def encode_kept(encoder: VisionTransformer, images: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """The transformer blocks on the prefix tokens and the patch tokens at ``ids_keep [B, K]`` only
    (position embeddings added before the selection): ``[B, prefix + K, D]`` after the final norm.
    :func:`encode_visible` with given positions instead of a random subset (I-JEPA's context)."""
    prefix_tokens, patches = embed_tokens(encoder, images)
    kept = patches.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    return _blocks_on(encoder, prefix_tokens, kept)


def _blocks_on(
    encoder: VisionTransformer, prefix_tokens: torch.Tensor | None, kept: torch.Tensor
) -> torch.Tensor:
    return run_blocks(encoder, kept if prefix_tokens is None else torch.cat([prefix_tokens, kept], dim=1))
