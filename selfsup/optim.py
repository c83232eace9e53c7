"""Optimiser set-up shared by every method: parameter groups, AdamW or LARS, learning-rate scaling
with the global batch, and a per-step cosine schedule with linear warm-up."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from timm.optim import Lars
from torch import nn


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
            the class token.
        betas: AdamW's betas (MAE uses (0.9, 0.95)).
        momentum: LARS momentum.
        warmup_epochs: linear warm-up from 0 to the scaled learning rate (fractions allowed).
        min_lr_ratio: the cosine decays to ``min_lr_ratio`` times the scaled learning rate.
    """

    name: Literal["adamw", "lars", "sgd"] = "adamw"
    base_lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    warmup_epochs: float = 10.0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ("adamw", "lars", "sgd"):
            raise ValueError(f"optim.name must be 'adamw', 'lars' or 'sgd', got {self.name!r}.")
        if not self.base_lr > 0:
            raise ValueError(f"optim.base_lr must be > 0, got {self.base_lr}.")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                "optim.weight_decay and optim.warmup_epochs must be >= 0 and min_lr_ratio in [0, 1]."
            )

    def scaled_lr(self, global_batch: int) -> float:
        return self.base_lr * global_batch / 256


def param_groups(
    module: nn.Module, weight_decay: float, no_decay_names: set[str] = frozenset()
) -> list[dict]:
    """Two groups: weights with decay; biases, norm weights (every 1-D tensor) and the names in
    ``no_decay_names`` (position embeddings, class token) without. Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in no_decay_names or name.split(".")[-1] in no_decay_names:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(config: OptimConfig, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    if config.name == "lars":
        return Lars(groups, lr=lr, momentum=config.momentum)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=config.betas)


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
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


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


def optimizer_and_schedule(trainer, config: OptimConfig, groups: list[dict]) -> dict:
    """Lightning's ``configure_optimizers`` result: the optimiser over ``groups`` (each group's
    learning rate is the scaled learning rate times its ``lr_scale``, default 1) and a per-step
    warm-up + cosine schedule."""
    total_steps = int(trainer.estimated_stepping_batches)  # also sets up the training data
    if math.isfinite(trainer.num_training_batches):
        steps_per_epoch = max(1, math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches))
    else:  # an iterable without length: spread max_epochs over the total
        steps_per_epoch = max(1, total_steps / max(1, trainer.max_epochs or 1))
    lr = config.scaled_lr(global_batch_size(trainer))
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer = build_optimizer(config, groups, lr)
    schedule = WarmupCosine(round(config.warmup_epochs * steps_per_epoch), total_steps, config.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
