"""Fine-tuning strategies: which weights of the backbone train, and how.

Each strategy is a small frozen dataclass with a name (configurable from YAML by name or with
``class_path``); it prepares the backbone in place (``apply``), may change how tokens are computed
(``encode``), builds the optimiser's parameter groups, and merges itself into plain timm weights
for export where that is possible.

    linear   backbone frozen and kept in eval mode; only the head trains
    full     every weight, with layer-wise learning-rate decay (MAE / BEiT recipe)
    partial  the last ``blocks`` blocks (ViT) or stages (CNN), the rest frozen
    bitfit   biases only (Ben Zaken et al. 2022)
    lora     low-rank adapters on the attention projections (Hu et al. 2021), mergeable
    adapter  bottleneck adapters after attention and MLP (Houlsby et al. 2019)
    prompt   learnable prompt tokens prepended to the patch tokens (VPT-shallow, Jia et al. 2022)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from timm.models._manipulate import group_parameters
from torch import nn

from selfsup.encoders import embed_tokens, is_vit, run_blocks
from selfsup.finetune.adapter import add_adapters
from selfsup.finetune.lora import add_lora, merge_lora


class NotExportable(ValueError):
    """The strategy adds modules that plain timm models do not have."""


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def _split_decay(
    named: list[tuple[str, nn.Parameter]], weight_decay: float, lr_scale: float, no_decay: set[str]
) -> list[dict]:
    decay = [p for n, p in named if p.ndim > 1 and n not in no_decay]
    rest = [p for n, p in named if not (p.ndim > 1 and n not in no_decay)]
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale, "decay": True},
        {"params": rest, "weight_decay": 0.0, "lr_scale": lr_scale, "decay": False},
    ]
    return [g for g in groups if g["params"]]


def _no_decay_names(backbone: nn.Module) -> set[str]:
    return set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()


@dataclass(frozen=True)
class Strategy:
    """Base: every backbone weight trains, with one learning rate."""

    name: ClassVar[str] = "base"

    @property
    def backbone_eval(self) -> bool:
        """Keep the backbone in eval mode during training (frozen BatchNorm / dropout)."""
        return False

    def apply(self, backbone: nn.Module) -> None:
        """Prepare ``backbone`` in place: freeze, insert modules."""

    def encode(self, backbone: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(output, prefix tokens)``: a ViT's normed tokens ``[B, N, D]`` or a CNN's map ``[B, C, h, w]``."""
        return backbone.forward_features(images), getattr(backbone, "num_prefix_tokens", 0)

    def param_groups(self, backbone: nn.Module, weight_decay: float) -> list[dict]:
        named = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
        return _split_decay(named, weight_decay, 1.0, _no_decay_names(backbone))

    def merge(self, backbone: nn.Module) -> nn.Module:
        """The backbone as plain timm weights (for export)."""
        return backbone

    def backbone_transform(self) -> dict[str, Any]:
        """:meth:`merge` for saved weights, declared in the checkpoint: how readers that know no
        strategy (probe, export, ``load_encoder``) turn the backbone's weights into a plain timm
        model's (see ``selfsup.backbone_state``)."""
        return {"kind": "none"}


@dataclass(frozen=True)
class Linear(Strategy):
    """Linear probing: the backbone is frozen and stays in eval mode; only the head trains."""

    name: ClassVar[str] = "linear"

    @property
    def backbone_eval(self) -> bool:
        return True

    def apply(self, backbone: nn.Module) -> None:
        _freeze(backbone)


@dataclass(frozen=True)
class Full(Strategy):
    """All weights train with layer-wise learning-rate decay (BEiT's idea, MAE's fine-tuning recipe),
    through timm's ``param_groups_layer_decay`` and its ``group_matcher`` layers: block ``i`` of a
    depth-``d`` ViT gets ``lr * layer_decay ** (d - 1 - i)``, the patch embedding, class token and
    position embedding ``lr * layer_decay ** d``, the last block, the final norm and the head ``lr``.
    (timm counts the final norm with the last block; MAE's own ``lr_decay.py`` gives them one more
    level, so its rates are those here times ``layer_decay``.) CNNs decay by timm's layers too."""

    name: ClassVar[str] = "full"
    layer_decay: float = 0.75

    def __post_init__(self) -> None:
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must lie in (0, 1], got {self.layer_decay}.")

    def param_groups(self, backbone: nn.Module, weight_decay: float) -> list[dict]:
        from timm.optim import param_groups_layer_decay

        groups = param_groups_layer_decay(
            backbone,
            weight_decay=weight_decay,
            no_weight_decay_list=sorted(_no_decay_names(backbone)),
            layer_decay=self.layer_decay,
        )
        return [
            {
                "params": g["params"],
                "weight_decay": g["weight_decay"],
                "lr_scale": g["lr_scale"],
                "decay": g["weight_decay"] > 0,
            }
            for g in groups
            if g["params"]
        ]


@dataclass(frozen=True)
class Partial(Strategy):
    """The last ``blocks`` transformer blocks (with the final norm) of a ViT, or the last ``blocks``
    stages of a CNN, train; everything before is frozen."""

    name: ClassVar[str] = "partial"
    blocks: int = 2

    def __post_init__(self) -> None:
        if self.blocks < 1:
            raise ValueError(f"partial needs blocks >= 1, got {self.blocks}.")

    def apply(self, backbone: nn.Module) -> None:
        _freeze(backbone)
        groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
        ids = sorted(groups)
        if self.blocks >= len(ids):
            raise ValueError(
                f"partial: blocks={self.blocks} but the backbone has only {len(ids) - 1} blocks/stages."
            )
        trainable = {n for gid in ids[-self.blocks :] for n in groups[gid]}
        for name, p in backbone.named_parameters():
            if name in trainable:
                p.requires_grad_(True)


@dataclass(frozen=True)
class BitFit(Strategy):
    """Only the biases train (and the head)."""

    name: ClassVar[str] = "bitfit"

    def apply(self, backbone: nn.Module) -> None:
        _freeze(backbone)
        found = 0
        for name, p in backbone.named_parameters():
            if name.endswith("bias"):
                p.requires_grad_(True)
                found += 1
        if not found:
            raise ValueError(f"bitfit: {type(backbone).__name__} has no bias parameters to train.")


@dataclass(frozen=True)
class LoRA(Strategy):
    """Low-rank adapters on the attention projections (``targets``: ``qkv`` and/or ``proj`` of timm's
    attention); the backbone's own weights are frozen. Merged into plain weights at export."""

    name: ClassVar[str] = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv",)

    def apply(self, backbone: nn.Module) -> None:
        _freeze(backbone)
        if add_lora(backbone, tuple(self.targets), self.rank, self.alpha, self.dropout) == 0:
            raise ValueError(
                f"lora found no nn.Linear named {list(self.targets)} in {type(backbone).__name__}: LoRA applies to "
                "the attention projections of transformers (a ViT); use full, partial, bitfit or linear for a CNN."
            )

    def merge(self, backbone: nn.Module) -> nn.Module:
        return merge_lora(backbone)

    def backbone_transform(self) -> dict[str, Any]:
        return {"kind": "merge_low_rank", "scale": self.alpha / self.rank}


def _require_vit(strategy: str, backbone: nn.Module) -> None:
    if not is_vit(backbone):
        raise ValueError(
            f"{strategy} applies to Vision Transformers (token sequences); {type(backbone).__name__} is not one. "
            "Use full, partial, bitfit or linear for a CNN."
        )


@dataclass(frozen=True)
class Adapter(Strategy):
    """Bottleneck adapters (``dim → bottleneck → dim``, starting as the identity) after the attention
    and the MLP of every block; the backbone's own weights are frozen. ``bottleneck`` defaults to an
    eighth of the width (24 for ViT-Tiny, 96 for ViT-Base: about 4% of the weights)."""

    name: ClassVar[str] = "adapter"
    bottleneck: int | None = None

    def apply(self, backbone: nn.Module) -> None:
        _require_vit("adapter", backbone)
        _freeze(backbone)
        add_adapters(backbone.blocks, backbone.embed_dim, self.bottleneck or max(1, backbone.embed_dim // 8))

    def merge(self, backbone: nn.Module) -> nn.Module:
        raise NotExportable(
            "adapter layers are not part of timm's VisionTransformer: an adapter fine-tune cannot "
            "be exported as a plain timm model (use lora, which merges, or full)."
        )

    def backbone_transform(self) -> dict[str, Any]:
        return {"kind": "not_plain", "strategy": self.name}


@dataclass(frozen=True)
class Prompt(Strategy):
    """VPT-shallow: ``num_tokens`` learnable tokens inserted after the class token at the input of
    the first block; the backbone is frozen. Pooling ignores the prompt tokens."""

    name: ClassVar[str] = "prompt"
    num_tokens: int = 10

    def apply(self, backbone: nn.Module) -> None:
        _require_vit("prompt", backbone)
        _freeze(backbone)
        prompts = nn.Parameter(torch.zeros(1, self.num_tokens, backbone.embed_dim))
        nn.init.trunc_normal_(prompts, std=0.02)
        backbone.register_parameter("prompt_tokens", prompts)

    def encode(self, backbone: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, int]:
        prefix, patches = embed_tokens(backbone, images)
        prompts = backbone.prompt_tokens.expand(patches.shape[0], -1, -1)
        parts = [prompts, patches] if prefix is None else [prefix, prompts, patches]
        return run_blocks(backbone, torch.cat(parts, dim=1)), backbone.num_prefix_tokens + self.num_tokens

    def merge(self, backbone: nn.Module) -> nn.Module:
        raise NotExportable(
            "prompt tokens are not part of timm's VisionTransformer: a prompt fine-tune cannot be "
            "exported as a plain timm model (use lora, which merges, or full)."
        )

    def backbone_transform(self) -> dict[str, Any]:
        return {"kind": "not_plain", "strategy": self.name}


STRATEGIES: dict[str, type[Strategy]] = {
    "linear": Linear,
    "full": Full,
    "partial": Partial,
    "bitfit": BitFit,
    "lora": LoRA,
    "adapter": Adapter,
    "prompt": Prompt,
}


def get_strategy(strategy: str | Strategy) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fine-tuning strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    return STRATEGIES[strategy]()
