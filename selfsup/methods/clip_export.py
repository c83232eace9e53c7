"""A :class:`selfsup.CLIP` as a folder open_clip loads without selfsup:
``open_clip.create_model_and_transforms("local-dir:PATH")`` and ``open_clip.get_tokenizer("local-dir:PATH")``.

The folder holds ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
``open_clip_model.safetensors``. open_clip's timm adapter cannot pass ``patch_size``, ``img_size`` or
``depth`` to timm, so the image tower is written as open_clip's native ``VisionTransformer`` with
converted weights (followed: open_clip's ``src/open_clip/transformer.py``, ``VisionTransformer`` and
``ResidualAttentionBlock``; timm's ``vision_transformer.py``): the fused ``qkv`` becomes
``nn.MultiheadAttention``'s ``in_proj``, the MLP's ``fc1`` / ``fc2`` become ``c_fc`` / ``c_proj``,
timm's final ``norm`` becomes ``ln_post``, the image projection ``proj``. The patch embedding's bias,
which open_clip's bias-free ``conv1`` lacks, is added to the patch rows of the position embedding
(exact: both are added to every patch token). A timm ViT with ``pre_norm=True`` maps its
``norm_pre`` to ``ln_pre``; without it ``no_ln_pre`` is set. Encoders this cannot express (no class
token, register tokens, position embeddings without the class row, a head-count not dividing the
width, LayerScale) are refused with the reason. The text tower is open_clip's own ``TextTransformer``
(``custom_text``), copied as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def open_clip_config(model) -> dict:
    """``open_clip_config.json``'s content for ``model`` (a :class:`selfsup.CLIP`)."""
    vit = model.encoder
    _check_expressible(vit)
    width = vit.embed_dim
    heads = vit.blocks[0].attn.num_heads
    text = model.text
    model_cfg = {
        "embed_dim": model.image_projection.out_features,
        "custom_text": True,
        "vision_cfg": {
            "image_size": vit.patch_embed.img_size[0],
            "patch_size": vit.patch_embed.patch_size[0],
            "width": width,
            "layers": len(vit.blocks),
            "head_width": width // heads,
            "mlp_ratio": vit.blocks[0].mlp.fc1.out_features / width,
            "no_ln_pre": isinstance(vit.norm_pre, nn.Identity),
            "pool_type": "tok",
            "norm_kwargs": {"eps": vit.norm.eps},
        },
        "text_cfg": {
            "context_length": text.context_length,
            "vocab_size": text.vocab_size,
            "width": text.width,
            "heads": text.heads,
            "layers": len(text.transformer.resblocks),
        },
    }
    if hasattr(model.criterion, "logit_bias"):
        model_cfg["init_logit_bias"] = float(model.criterion.logit_bias.detach())
    preprocess_cfg = {
        "size": vit.patch_embed.img_size[0],
        "mean": list(model.mean),
        "std": list(model.std),
        "interpolation": "bilinear",
        "resize_mode": "shortest",
    }
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}


def _check_expressible(vit) -> None:
    reasons = []
    if getattr(vit, "cls_token", None) is None or vit.global_pool != "token":
        reasons.append("it has no class token pooled as the feature")
    if getattr(vit, "num_reg_tokens", 0):
        reasons.append("it has register tokens")
    if getattr(vit, "no_embed_class", False) or vit.pos_embed is None:
        reasons.append("its position embedding has no class-token row")
    if not isinstance(vit.blocks[0].ls1, nn.Identity):
        reasons.append("it uses LayerScale")
    if not isinstance(vit.fc_norm, nn.Identity):
        reasons.append("it normalises after pooling (fc_norm)")
    if reasons:
        raise ValueError(
            f"open_clip's VisionTransformer cannot express this encoder: {'; '.join(reasons)}. Export the "
            "image tower alone (the timm folder) instead."
        )


def open_clip_state_dict(model) -> dict[str, torch.Tensor]:
    """``model``'s weights under open_clip's ``CustomTextCLIP`` names (see the module docstring)."""
    vit = model.encoder
    pos = vit.pos_embed.detach()[0].clone()  # [1 + patches, width]
    if vit.patch_embed.proj.bias is not None:
        pos[1:] += vit.patch_embed.proj.bias.detach()
    out = {
        "visual.conv1.weight": vit.patch_embed.proj.weight,
        "visual.class_embedding": vit.cls_token[0, 0],
        "visual.positional_embedding": pos,
        "visual.ln_post.weight": vit.norm.weight,
        "visual.ln_post.bias": vit.norm.bias,
        "visual.proj": model.image_projection.weight.T,
    }
    if not isinstance(vit.norm_pre, nn.Identity):
        out.update({"visual.ln_pre.weight": vit.norm_pre.weight, "visual.ln_pre.bias": vit.norm_pre.bias})
    names = {
        "norm1": "ln_1", "attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
        "attn.proj": "attn.out_proj", "norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
    }  # fmt: skip
    for i, block in enumerate(vit.blocks):
        for key, value in block.state_dict().items():
            stem = next((k for k in names if key.startswith(k)), None)
            if stem is None:
                raise ValueError(f"open_clip's VisionTransformer has no counterpart of block weight '{key}'.")
            out[f"visual.transformer.resblocks.{i}.{names[stem]}{key[len(stem) :]}"] = value
    out.update({f"text.{k}": v for k, v in model.text.state_dict().items()})
    out["logit_scale"] = model.criterion.logit_scale
    if hasattr(model.criterion, "logit_bias"):
        out["logit_bias"] = model.criterion.logit_bias
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def write_open_clip(model, folder: str | Path) -> Path:
    """Write ``model`` (a :class:`selfsup.CLIP`) as an open_clip ``local-dir:`` folder; returns it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    config = open_clip_config(model)
    weights = open_clip_state_dict(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_file(weights, str(folder / "open_clip_model.safetensors"))
    return folder
