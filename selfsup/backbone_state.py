"""How a fine-tune checkpoint's backbone weights become a plain timm model's: the transform that the
fine-tune declares in its checkpoint record (``task["backbone_transform"]``), applied to tensors.

A fine-tune strategy may change the backbone's layers (LoRA wraps its linear layers; adapters and
prompts add modules). When it saves a checkpoint it declares one of these transforms, so that
readers (probe, export, ``load_encoder``) turn the weights into a plain model's without knowing
any strategy:

``{"kind": "none"}``
    the weights are a plain model's already (linear probing, full, partial, BitFit);
``{"kind": "merge_low_rank", "scale": s}``
    every ``X.base.weight`` / ``X.lora_A`` / ``X.lora_B`` triple becomes ``X.weight = base + s B A``
    (LoRA, merged);
``{"kind": "not_plain", "strategy": name}``
    no plain counterpart exists (adapters, prompts): refused with the way to load the whole model.

Checkpoints written before the declaration existed get it from their strategy record
(:func:`legacy_backbone_transform`), once, when their record is read.
"""

from __future__ import annotations

from typing import Any

import torch


class NotPlainError(ValueError):
    """The backbone has layers a plain timm model lacks; the message says how to load it instead."""


def merge_low_rank(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A state dict with low-rank adapted linear layers (``X.base.weight``, ``X.base.bias``,
    ``X.lora_A [r, in]``, ``X.lora_B [out, r]``) turned into plain ``nn.Linear`` keys
    (``X.weight = base + scale * B @ A``, ``X.bias``); every other key as it is."""
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith((".lora_A", ".lora_B")):
            continue
        if key.endswith(".base.weight"):
            layer = key[: -len(".base.weight")]
            a, b = state[f"{layer}.lora_A"], state[f"{layer}.lora_B"]
            merged[f"{layer}.weight"] = value + scale * (b @ a).to(value.dtype)
        elif key.endswith(".base.bias"):
            merged[key[: -len(".base.bias")] + ".bias"] = value
        else:
            merged[key] = value
    return merged


def to_plain(state: dict[str, torch.Tensor], transform: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
    """``state`` through the declared ``transform`` (see the module docstring); ``path`` names the
    checkpoint in errors."""
    kind = transform.get("kind", "none")
    if kind == "none":
        return state
    if kind == "merge_low_rank":
        return merge_low_rank(state, float(transform["scale"]))
    if kind == "not_plain":
        raise NotPlainError(
            f"'{path}' is a fine-tune with the {transform.get('strategy')} strategy, whose backbone has layers a "
            "plain timm model lacks: load the whole model with selfsup.FineTune.from_checkpoint(PATH) instead."
        )
    raise NotPlainError(
        f"'{path}' declares a backbone transform {kind!r} that this selfsup does not know: upgrade selfsup."
    )


def legacy_backbone_transform(strategy: dict[str, Any] | None) -> dict[str, Any]:
    """The transform of a fine-tune record written before strategies declared theirs (selfsup
    0.2.0 and earlier), from its strategy record ``{"name": ..., and the strategy's fields}``."""
    strategy = strategy or {}
    name = strategy.get("name")
    if name == "lora":
        return {"kind": "merge_low_rank", "scale": float(strategy["alpha"]) / float(strategy["rank"])}
    if name in ("adapter", "prompt"):
        return {"kind": "not_plain", "strategy": name}
    return {"kind": "none"}
