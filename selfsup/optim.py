"""Optimiser set-up shared by every selfsup module: parameter groups decided by name (so that they
stay right under FSDP, which flattens parameters), AdamW (fused on GPUs), LARS or SGD, the learning
rate scaled with the global batch, and per-step schedules in closed form: the learning rate (linear
warm-up, then cosine) and, optionally, the weight decay (cosine from ``weight_decay`` to
``weight_decay_end``, as DINO raises it from 0.04 to 0.4)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

# Prefixes that wrappers add to parameter names: FSDP, activation checkpointing, torch.compile.
WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule.

    Attributes:
        name: ``adamw`` (the default for ViTs), ``lars`` (SimCLR's ResNet recipe; biases and norm
            parameters are excluded from weight decay and from the trust-ratio adaptation) or ``sgd``
            (with momentum).
        base_lr: learning rate for a global batch of 256. The learning rate used is
            ``base_lr * global_batch / 256`` (linear scaling, Goyal et al. 2017), with
            ``global_batch = batch_size * processes * accumulate_grad_batches``.
        weight_decay: decoupled weight decay, not applied to biases, norms, position embeddings and
            the class token (decided by parameter name and shape, recorded before any wrapping).
        weight_decay_end: if set, the weight decay follows a cosine from ``weight_decay`` (first
            step) to ``weight_decay_end`` (last step); None keeps it constant.
        decay_all: apply the weight decay to every trainable parameter, biases, norms, position
            embeddings and tokens included, as references that hand all parameters to one AdamW
            group do (MoCo v3's ``main_moco.py``). Off by default.
        betas: AdamW's betas (MAE uses (0.9, 0.95)).
        momentum: LARS / SGD momentum.
        warmup_epochs: linear warm-up from 0 to the scaled learning rate (fractions allowed).
        min_lr_ratio: the cosine decays to ``min_lr_ratio`` times the scaled learning rate.
        layer_decay: layer-wise learning-rate decay of the trainable ViT (BEiT; DINOv2's
            ``layerwise_decay``, 0.9): block ``i`` of a depth-``d`` ViT trains at
            ``lr * layer_decay ** (d - i)``, the embeddings (patch embedding, position embedding,
            class, register and mask tokens) at ``lr * layer_decay ** (d + 1)``, everything else (the
            final norm, heads, predictors) at ``lr``. 1 (the default) turns it off. Decided by
            parameter name (``blocks.<i>.``), as in dinov2's ``param_groups.py``. Pretraining methods
            only: a fine-tuning strategy has its own ``layer_decay``.
        patch_embed_lr_mult: a further factor on the patch embedding's learning rate (DINOv2's
            ``patch_embed_lr_mult``, 0.2); 1 (the default) leaves it as the rest.
        fused: use PyTorch's fused AdamW / SGD kernels (one launch for all parameters; the non-finite
            guard then skips a bad step on the device, leaving weights and optimiser state untouched).
            None: fused on CUDA and CPU (PyTorch has fused kernels for both), ``foreach`` elsewhere.
    """

    name: Literal["adamw", "lars", "sgd"] = "adamw"
    base_lr: float = 1e-3
    weight_decay: float = 0.05
    weight_decay_end: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    warmup_epochs: float = 10.0
    min_lr_ratio: float = 0.0
    layer_decay: float = 1.0
    patch_embed_lr_mult: float = 1.0
    decay_all: bool = False
    fused: bool | None = None

    def __post_init__(self) -> None:
        if self.name not in ("adamw", "lars", "sgd"):
            raise ValueError(f"optim.name must be 'adamw', 'lars' or 'sgd', got {self.name!r}.")
        if not self.base_lr > 0:
            raise ValueError(f"optim.base_lr must be > 0, got {self.base_lr}.")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                "optim.weight_decay and optim.warmup_epochs must be >= 0 and min_lr_ratio in [0, 1]."
            )
        if self.weight_decay_end is not None and self.weight_decay_end < 0:
            raise ValueError(f"optim.weight_decay_end must be >= 0 or null, got {self.weight_decay_end}.")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(
                f"optim.layer_decay must lie in (0, 1] (1: off; 0.9 in DINOv2), got {self.layer_decay}."
            )
        if not self.patch_embed_lr_mult > 0:
            raise ValueError(
                f"optim.patch_embed_lr_mult must be > 0 (1: off; 0.2 in DINOv2), got {self.patch_embed_lr_mult}."
            )

    def scaled_lr(self, global_batch: int) -> float:
        return self.base_lr * global_batch / 256


def canonical_name(name: str) -> str:
    """A parameter's name without the prefixes FSDP, checkpoint wrappers and torch.compile insert."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def decayed_names(module: nn.Module, no_decay_names: Iterable[str] = (), decay_all: bool = False) -> set[str]:
    """Names of the trainable parameters that get weight decay: weights of two or more dimensions,
    except those in ``no_decay_names`` (full names, or last components such as ``pos_embed``); with
    ``decay_all``, every trainable parameter.

    Call this on the unwrapped module: FSDP turns every parameter into a 1-D shard, so the shape
    rule applied after wrapping would exempt every weight (zero weight decay, silently)."""
    skip = set(no_decay_names)
    return {
        canonical_name(name)
        for name, param in module.named_parameters()
        if param.requires_grad
        and (decay_all or (param.ndim > 1 and name not in skip and name.split(".")[-1] not in skip))
    }


def param_groups(
    module: nn.Module,
    weight_decay: float,
    no_decay_names: Iterable[str] = (),
    decayed: set[str] | None = None,
    layer_decay: float = 1.0,
    patch_embed_lr_mult: float = 1.0,
    held: Iterable[str] = (),
) -> list[dict]:
    """Two groups: the parameters named in ``decayed`` (default: :func:`decayed_names` of
    ``module`` now) with weight decay, every other trainable parameter without. Groups carry
    ``decay: True / False`` for the weight-decay schedule.

    With ``layer_decay`` or ``patch_embed_lr_mult`` other than 1 (see :class:`OptimConfig`), each
    of the two is split further by learning-rate factor (:func:`lr_scales`), every group carrying its
    ``lr_scale``. Parameters whose names start with a prefix in ``held`` (a head warm-up's backbone,
    ``encoder.``) go to groups of their own marked ``held: True`` (see :class:`HeldWarmup`). The
    groups at the full rate and not held come first (``train/lr`` logs the first group)."""
    decayed = decayed_names(module, no_decay_names) if decayed is None else decayed
    named = [(canonical_name(n), p) for n, p in module.named_parameters() if p.requires_grad]
    held = tuple(held)
    scales = lr_scales([n for n, _ in named], layer_decay, patch_embed_lr_mult)
    keyed: dict[tuple[bool, float, bool], list[nn.Parameter]] = {}
    for name, param in named:
        key = (bool(held) and name.startswith(held), scales[name], name in decayed)
        keyed.setdefault(key, []).append(param)
    groups = []
    for (is_held, scale, decay), params in sorted(
        keyed.items(), key=lambda i: (i[0][0], -i[0][1], not i[0][2])
    ):
        group = {"params": params, "weight_decay": weight_decay if decay else 0.0, "decay": decay}
        if scale != 1.0 or layer_decay != 1.0 or patch_embed_lr_mult != 1.0:
            group["lr_scale"] = scale
        if is_held:
            group["held"] = True
        groups.append(group)
    return groups


# parameter-name components that sit below the first block (dinov2's layer 0)
EMBEDDING_NAMES = frozenset(
    {"patch_embed", "pos_embed", "cls_token", "reg_token", "register_tokens", "mask_token"}
)


def lr_scales(names: Iterable[str], layer_decay: float, patch_embed_lr_mult: float = 1.0) -> dict[str, float]:
    """Each name's learning-rate factor (dinov2 ``param_groups.py``, ``get_vit_lr_decay_rate``):
    ``layer_decay ** (d + 1 - layer)``. The ViT is the module holding the deepest ``blocks.<i>``
    stack (the first such in ``names`` on a tie; a decoder's shallower blocks are not it), ``d`` its
    number of blocks; ``layer`` is ``i + 1`` for a parameter of its block ``i``, 0 for its embeddings
    and those of the top-level module (:data:`EMBEDDING_NAMES`: a method's own mask token) and
    ``d + 1`` for everything else. The patch embedding's factor is further multiplied by
    ``patch_embed_lr_mult``."""
    names = list(names)
    depths: dict[str, int] = {}
    for name in names:
        found = _block_index(name)
        if found is not None:
            prefix, index = found
            depths[prefix] = max(depths.get(prefix, 0), index + 1)
    vit = max(depths, key=depths.__getitem__) if depths else ""
    depth = depths.get(vit, 0)
    scales = {}
    for name in names:
        parts = set(name.split("."))
        found = _block_index(name)
        if found is not None and found[0] == vit:
            layer = found[1] + 1
        elif parts & EMBEDDING_NAMES and (name.startswith(vit) or name.count(".") == 0):
            layer = 0
        else:
            layer = depth + 1
        scale = layer_decay ** (depth + 1 - layer)
        scales[name] = scale * patch_embed_lr_mult if "patch_embed" in parts else scale
    return scales


def _block_index(name: str) -> tuple[str, int] | None:
    """``("encoder.", 3)`` for ``encoder.blocks.3.attn.qkv.weight``; None outside a block stack."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "blocks" and parts[i + 1].isdigit():
            return "".join(p + "." for p in parts[:i]), int(parts[i + 1])
    return None


def build_optimizer(
    config: OptimConfig, groups: list[dict], lr: float, device: torch.device | str | None = None
) -> torch.optim.Optimizer:
    device = torch.device(device) if device is not None else torch.device("cpu")
    fused = config.fused if config.fused is not None else device.type in ("cuda", "cpu")
    if config.name == "lars":
        from timm.optim import Lars

        return Lars(groups, lr=lr, momentum=config.momentum)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, fused=fused or None)
    return torch.optim.AdamW(groups, lr=lr, betas=config.betas, fused=fused or None)


def cosine(start: float, end: float, step: int, total: int) -> float:
    """Half a cosine from ``start`` (step 0) to ``end`` (step ``total`` and after)."""
    progress = min(1.0, max(0, step) / max(1, total))
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosine:
    """Multiplier of the peak learning rate at ``step``: linear from ~0 to 1 over ``warmup_steps``,
    then half a cosine down to ``min_ratio`` at ``total_steps``. A picklable callable for LambdaLR."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> None:
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return cosine(1.0, self.min_ratio, step - self.warmup_steps, self.total_steps - self.warmup_steps)


class HeldWarmup:
    """The multiplier of a held group (a head warm-up's backbone): 0 for the first ``held_steps``
    steps (its weights stay bitwise as they are: a learning rate of 0 moves no weight, decay
    included), then ``schedule``'s multiplier times a linear ramp from ~0 to 1 over
    ``warmup_steps`` (the backbone's own warm-up). Picklable, for LambdaLR."""

    def __init__(self, schedule: WarmupCosine, held_steps: int, warmup_steps: int) -> None:
        self.schedule = schedule
        self.held_steps = max(0, int(held_steps))
        self.warmup_steps = max(0, int(warmup_steps))

    def __call__(self, step: int) -> float:
        if step < self.held_steps:
            return 0.0
        since = step - self.held_steps
        ramp = 1.0 if since >= self.warmup_steps else (since + 1) / self.warmup_steps
        return self.schedule(step) * ramp


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """Per-step learning rate (a :class:`WarmupCosine` multiplier of each group's initial rate) and,
    with ``weight_decay_end``, per-step weight decay of the groups marked ``decay`` (cosine from
    ``weight_decay`` to ``weight_decay_end`` over ``total_steps``, times the group's ``wd_scale``)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_multiplier: WarmupCosine | list,
        weight_decay: float,
        weight_decay_end: float | None,
        total_steps: int,
    ) -> None:
        self.weight_decay = float(weight_decay)
        self.weight_decay_end = None if weight_decay_end is None else float(weight_decay_end)
        self.total_steps = int(total_steps)
        super().__init__(optimizer, lr_multiplier)

    def weight_decay_at(self, step: int) -> float:
        if self.weight_decay_end is None:
            return self.weight_decay
        return cosine(self.weight_decay, self.weight_decay_end, step, self.total_steps)

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        if self.weight_decay_end is None:
            return
        value = self.weight_decay_at(self.last_epoch)
        for group in self.optimizer.param_groups:
            if group.get("decay"):
                group["weight_decay"] = value * group.get("wd_scale", 1.0)


def global_batch_size(trainer) -> int:
    """Images per optimiser step over all processes: batch size x processes x accumulated batches."""
    batch = getattr(trainer.datamodule, "batch_size", None) if trainer.datamodule is not None else None
    if batch is None:
        batch = getattr(trainer.train_dataloader, "batch_size", None)
    if batch is None:
        raise ValueError(
            "cannot tell the batch size to scale the learning rate: use a selfsup data module "
            "or a DataLoader with a batch_size."
        )
    return int(batch) * trainer.world_size * trainer.accumulate_grad_batches


def steps_per_epoch(trainer, total_steps: int) -> float | None:
    """Optimiser steps per epoch (for epoch-denominated schedules), or None where the training data
    has no length and the run is set by ``max_steps`` alone."""
    batches = trainer.num_training_batches
    if not math.isfinite(batches) and trainer.train_dataloader is None:
        # a run set by max_steps: Lightning's estimate returns max_steps without loading the data,
        # so the epoch's length is not known yet (it used to be taken as the whole run)
        trainer.fit_loop.setup_data()
        batches = trainer.num_training_batches
    if math.isfinite(batches):
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches))
    if trainer.max_epochs is not None and trainer.max_epochs > 0:  # an iterable without length
        return max(1, total_steps / trainer.max_epochs)
    return None


def optimizer_and_schedule(
    trainer,
    config: OptimConfig,
    groups: list[dict],
    device=None,
    held_steps: int = 0,
    held_warmup_steps: int = 0,
) -> dict:
    """Lightning's ``configure_optimizers`` result: the optimiser over ``groups`` (each group's
    learning rate is the scaled learning rate times its ``lr_scale``, default 1) and the per-step
    schedule; groups marked ``held`` follow :class:`HeldWarmup` (``held_steps``, ``held_warmup_steps``)."""
    total_steps = int(trainer.estimated_stepping_batches)  # also sets up the training data
    per_epoch = steps_per_epoch(trainer, total_steps)
    if per_epoch is None:
        if config.warmup_epochs > 0:
            raise ValueError(
                f"optim.warmup_epochs={config.warmup_epochs:g} is in epochs, but the training data has no length "
                "and the run is set by trainer.max_steps alone, so an epoch's number of steps is unknown: set "
                "trainer.max_epochs as well, or optim.warmup_epochs: 0."
            )
        per_epoch = 1
    lr = config.scaled_lr(global_batch_size(trainer))
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer = build_optimizer(config, groups, lr, device)
    multiplier = WarmupCosine(round(config.warmup_epochs * per_epoch), total_steps, config.min_lr_ratio)
    if any(group.get("held") for group in groups):
        held = HeldWarmup(multiplier, held_steps, held_warmup_steps)
        multiplier = [held if group.get("held") else multiplier for group in optimizer.param_groups]
    scheduler = StepSchedule(optimizer, multiplier, config.weight_decay, config.weight_decay_end, total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
