"""Magnitude pruning of a timm Vision Transformer's linear layers with ``torch.nn.utils.prune``.

Three modes (the masks are ``torch.nn.utils.prune`` re-parametrisations, so a fine-tune keeps them:
``weight = weight_orig * weight_mask`` in every forward):

- ``unstructured``: global L1 magnitude pruning over every transformer block's ``nn.Linear`` weight
  (qkv, proj, fc1, fc2) with ``prune.global_unstructured``: the ``amount`` fraction of those weights
  with the smallest absolute value, across all layers, is zeroed. Dense kernels do not run faster on
  zeros: this saves space only once compressed (e.g. zip) or run on sparse kernels.
- ``heads``: whole attention heads. In each block, the ``floor(amount * num_heads)`` heads with the
  smallest L2 norm of their weight slices (the head's q, k and v rows of ``qkv`` and its columns of
  ``proj``) are removed by zeroing those slices and the matching ``qkv`` biases. A head with zero
  values outputs zero, so the block computes exactly what it would without the head. timm's
  ``VisionTransformer`` builds every block with the same ``num_heads`` and head width (its
  ``Attention`` takes ``attn_head_dim``, but ``VisionTransformer`` does not pass one), so a model with
  fewer heads per block cannot be expressed in timm's config: the pruned heads stay as zeros.
- ``mlp``: MLP hidden channels. In each block, the ``floor(amount * hidden)`` channels with the
  smallest L2 norm of their ``fc1`` row and ``fc2`` column are removed by zeroing them (and the
  ``fc1`` bias: GELU(0) = 0, so a removed channel contributes nothing). Every block removes the same
  number, so :func:`shrink_mlp` can then rebuild the model physically smaller with timm's own
  ``mlp_ratio`` (``hidden = int(embed_dim * mlp_ratio)``): a plain timm model with fewer parameters
  that computes the same function.

Structured pruning is per block (each block keeps the same share), as in the head-pruning study of
Michel et al. 2019, "Are Sixteen Heads Really Better than One?" (heads scored per layer); unstructured
pruning is global, as in ``torch.nn.utils.prune``'s tutorial and Han et al. 2015.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import prune

PruneMode = Literal["unstructured", "heads", "mlp"]
PRUNE_MODES = ("unstructured", "heads", "mlp")


@dataclass
class PruneResult:
    """What :func:`prune_encoder` removed.

    ``sparsity`` is the fraction of zeros in the targeted weights (``targets``), measured after
    pruning; ``removed`` counts what was removed (weights, heads or channels) and ``per_block`` the
    heads or channels removed in each block (structured modes)."""

    mode: str
    amount: float
    targets: list[str]
    removed: int
    total: int
    sparsity: float
    per_block: list[list[int]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "amount_requested": self.amount,
            "removed": self.removed,
            "out_of": self.total,
            "unit": {"unstructured": "weights", "heads": "attention heads", "mlp": "MLP channels"}[self.mode],
            "sparsity_of_targets": self.sparsity,
            "targets": self.targets,
            "removed_per_block": self.per_block,
        }


def _blocks(model: nn.Module) -> nn.ModuleList | nn.Sequential:
    blocks = getattr(model, "blocks", None)
    if blocks is None or not len(blocks):
        raise ValueError(
            f"{type(model).__name__} has no transformer blocks (model.blocks): pruning works on timm "
            "VisionTransformer exports."
        )
    return blocks


def linear_targets(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every ``nn.Linear`` inside the transformer blocks (qkv, proj, fc1, fc2), by qualified name."""
    blocks = _blocks(model)
    return [
        (f"blocks.{i}.{name}", module)
        for i, block in enumerate(blocks)
        for name, module in block.named_modules()
        if isinstance(module, nn.Linear)
    ]


def _check_attention(block: nn.Module, index: int) -> nn.Module:
    attn = getattr(block, "attn", None)
    if attn is None or not all(hasattr(attn, a) for a in ("qkv", "proj", "num_heads", "head_dim")):
        raise ValueError(
            f"block {index} has no timm Attention (attn.qkv, attn.proj): use --prune_mode unstructured or mlp."
        )
    if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity) or getattr(attn, "gate", None):
        raise ValueError(
            f"block {index}'s attention normalises or gates across heads (scale_norm / gated), so zeroing a "
            "head does not remove it: use --prune_mode unstructured or mlp."
        )
    return attn


def _check_mlp(block: nn.Module, index: int) -> nn.Module:
    mlp = getattr(block, "mlp", None)
    if mlp is None or not all(isinstance(getattr(mlp, a, None), nn.Linear) for a in ("fc1", "fc2")):
        raise ValueError(
            f"block {index} has no timm Mlp with fc1/fc2 linear layers (a gated or SwiGLU MLP?): use "
            "--prune_mode unstructured or heads."
        )
    if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity) or not isinstance(
        getattr(mlp, "act", None), nn.GELU
    ):
        raise ValueError(
            f"block {index}'s MLP has a hidden norm or a non-GELU activation, so a zeroed channel is not removed: "
            "use --prune_mode unstructured or heads."
        )
    return mlp


def structured_count(total: int, amount: float, what: str) -> int:
    """``floor(amount * total)``, refusing amounts that remove nothing or everything."""
    count = math.floor(amount * total + 1e-9)
    if count < 1:
        raise ValueError(
            f"--prune {amount} of {total} {what} per block removes none: use an amount >= {1 / total:.3g}."
        )
    if count >= total:
        raise ValueError(
            f"--prune {amount} would remove all {total} {what} of a block: use a smaller amount."
        )
    return count


@torch.no_grad()
def head_scores(attn: nn.Module) -> torch.Tensor:
    """``[num_heads]`` L2 norm of each head's q, k, v rows of ``qkv.weight`` and columns of ``proj.weight``."""
    heads, width = attn.num_heads, attn.head_dim
    qkv = attn.qkv.weight.reshape(3, heads, width, -1)  # rows: (q|k|v, head, channel)
    proj = attn.proj.weight.reshape(attn.proj.weight.shape[0], heads, width)
    return (qkv.pow(2).sum(dim=(0, 2, 3)) + proj.pow(2).sum(dim=(0, 2))).sqrt()


@torch.no_grad()
def channel_scores(mlp: nn.Module) -> torch.Tensor:
    """``[hidden]`` L2 norm of each hidden channel's ``fc1`` row and ``fc2`` column."""
    return (mlp.fc1.weight.pow(2).sum(1) + mlp.fc2.weight.pow(2).sum(0)).sqrt()


def _prune_heads(model: nn.Module, amount: float) -> PruneResult:
    blocks = _blocks(model)
    attns = [_check_attention(block, i) for i, block in enumerate(blocks)]
    count = structured_count(attns[0].num_heads, amount, "attention heads")
    per_block = []
    for attn in attns:
        heads, width = attn.num_heads, attn.head_dim
        drop = head_scores(attn).argsort()[:count]
        keep_head = torch.ones(heads, dtype=torch.bool, device=drop.device)
        keep_head[drop] = False
        keep_rows = keep_head.repeat_interleave(width).repeat(3)  # qkv rows: (q|k|v, head, channel)
        qkv_mask = keep_rows[:, None].expand_as(attn.qkv.weight).to(attn.qkv.weight.dtype)
        prune.custom_from_mask(attn.qkv, "weight", qkv_mask)
        if attn.qkv.bias is not None:
            prune.custom_from_mask(attn.qkv, "bias", keep_rows.to(attn.qkv.bias.dtype))
        proj_mask = keep_head.repeat_interleave(width)[None, :].expand_as(attn.proj.weight)
        prune.custom_from_mask(attn.proj, "weight", proj_mask.to(attn.proj.weight.dtype))
        per_block.append(sorted(drop.tolist()))
    targets = [f"blocks.{i}.attn.{n}.weight" for i in range(len(attns)) for n in ("qkv", "proj")]
    total = sum(a.num_heads for a in attns)
    return PruneResult(
        "heads", amount, targets, count * len(attns), total, count / attns[0].num_heads, per_block
    )


def _prune_mlp(model: nn.Module, amount: float) -> PruneResult:
    blocks = _blocks(model)
    mlps = [_check_mlp(block, i) for i, block in enumerate(blocks)]
    hidden = {m.fc1.out_features for m in mlps}
    if len(hidden) != 1:
        raise ValueError(f"the blocks' MLPs differ in width ({sorted(hidden)}); mlp pruning needs one width.")
    count = structured_count(hidden.pop(), amount, "MLP channels")
    per_block = []
    for mlp in mlps:
        drop = channel_scores(mlp).argsort()[:count]
        keep = torch.ones(mlp.fc1.out_features, dtype=mlp.fc1.weight.dtype, device=drop.device)
        keep[drop] = 0
        prune.custom_from_mask(mlp.fc1, "weight", keep[:, None].expand_as(mlp.fc1.weight))
        if mlp.fc1.bias is not None:
            prune.custom_from_mask(mlp.fc1, "bias", keep)
        prune.custom_from_mask(mlp.fc2, "weight", keep[None, :].expand_as(mlp.fc2.weight))
        per_block.append(sorted(drop.tolist()))
    targets = [f"blocks.{i}.mlp.{n}.weight" for i in range(len(mlps)) for n in ("fc1", "fc2")]
    total = sum(m.fc1.out_features for m in mlps)
    return PruneResult(
        "mlp", amount, targets, count * len(mlps), total, count / mlps[0].fc1.out_features, per_block
    )


def prune_encoder(model: nn.Module, amount: float, mode: PruneMode = "unstructured") -> PruneResult:
    """Attach magnitude-pruning masks to ``model`` in place (see the module docstring).

    The masks stay attached (``torch.nn.utils.prune`` re-parametrisation) so that a fine-tune keeps
    pruned weights at zero; :func:`make_permanent` folds them into plain weights.

    Args:
        model: a timm ``VisionTransformer``.
        amount: fraction in (0, 1): of the blocks' linear weights (unstructured), of each block's heads
            or MLP channels (structured; rounded down, at least one).
        mode: ``unstructured``, ``heads`` or ``mlp``.
    """
    if not 0.0 < amount < 1.0:
        raise ValueError(f"prune amount must be in (0, 1), got {amount}: e.g. --prune 0.5 removes half.")
    if mode == "heads":
        return _prune_heads(model, amount)
    if mode == "mlp":
        return _prune_mlp(model, amount)
    if mode != "unstructured":
        raise ValueError(f"prune_mode must be one of {', '.join(PRUNE_MODES)}, got {mode!r}.")
    targets = linear_targets(model)
    prune.global_unstructured(
        [(module, "weight") for _, module in targets], pruning_method=prune.L1Unstructured, amount=amount
    )
    total = sum(module.weight.numel() for _, module in targets)
    removed = sum(int((module.weight_mask == 0).sum()) for _, module in targets)
    return PruneResult(
        "unstructured", amount, [f"{n}.weight" for n, _ in targets], removed, total, removed / total
    )


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its parameter (``prune.remove``): plain weights with zeros."""
    for module in model.modules():
        for name in ("weight", "bias"):
            if prune.is_pruned(module) and hasattr(module, f"{name}_mask"):
                prune.remove(module, name)
    return model


@torch.no_grad()
def zero_fraction(model: nn.Module, names: list[str]) -> float:
    """Fraction of exact zeros over the named parameters of ``model`` (its measured sparsity)."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"no parameters {missing[:3]} in the model (were the masks made permanent?).")
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    return zeros / sum(params[n].numel() for n in names)


def mlp_ratio_for(hidden: int, dim: int) -> float:
    """The ``mlp_ratio`` for which timm builds ``int(dim * mlp_ratio) == hidden`` channels."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:  # float rounding: nudge up to the next representable value
        ratio = math.nextafter(ratio, math.inf)
    return ratio


@torch.no_grad()
def shrink_mlp(model: nn.Module, removed_per_block: list[list[int]], build) -> tuple[nn.Module, float]:
    """A physically smaller copy of an ``mlp``-pruned model (masks already permanent) without the
    channels :func:`prune_encoder` removed (``PruneResult.per_block``). ``build(mlp_ratio)`` must return
    a fresh model of the same architecture with that ``mlp_ratio``; returns ``(smaller model, ratio)``."""
    blocks = _blocks(model)
    if len(removed_per_block) != len(blocks) or len({len(r) for r in removed_per_block}) != 1:
        raise ValueError("shrink_mlp needs the same number of removed channels for every block.")
    hidden = blocks[0].mlp.fc1.out_features
    ratio = mlp_ratio_for(hidden - len(removed_per_block[0]), blocks[0].mlp.fc1.in_features)
    small = build(ratio)
    state = model.state_dict()
    for i, removed in enumerate(removed_per_block):
        keep = torch.ones(hidden, dtype=torch.bool)
        keep[removed] = False
        prefix = f"blocks.{i}.mlp."
        state[prefix + "fc1.weight"] = state[prefix + "fc1.weight"][keep]
        if prefix + "fc1.bias" in state:
            state[prefix + "fc1.bias"] = state[prefix + "fc1.bias"][keep]
        state[prefix + "fc2.weight"] = state[prefix + "fc2.weight"][:, keep]
    small.load_state_dict(state)
    return small.eval(), ratio
