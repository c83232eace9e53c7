"""Short recovery fine-tune of a pruned encoder: feature distillation to the unpruned original.

The pruned student (its ``torch.nn.utils.prune`` masks still attached, so pruned weights stay zero)
learns to reproduce the frozen original's output tokens (``forward_features``: every token after the
final norm, which the pooled feature is computed from) on unlabelled images, with a mean squared
error. No labels and no augmentation: the cheapest honest recovery, in the spirit of the
layer-wise reconstruction that post-training pruning methods use (e.g. Frantar & Alistarh 2023,
"SparseGPT", which reconstructs the dense layer outputs) but end to end through the network.
AdamW, constant learning rate, no weight decay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


def distill_recover(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    lr: float = 1e-4,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> list[torch.Tensor]:
    """Train ``student`` for ``steps`` batches of ``loader`` (``(uint8 images, labels)``, labels unused;
    restarted when exhausted). Returns the per-step losses (0-dim tensors, kept on the device: nothing
    is synchronised inside the loop). ``on_step(step, loss)`` is called after each step."""
    if steps < 1:
        raise ValueError(f"finetune_steps must be >= 1 for a recovery fine-tune, got {steps}.")
    if lr <= 0:
        raise ValueError(f"finetune_lr must be > 0, got {lr}.")
    student.to(device).train()
    teacher.to(device).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(
        [p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
    )
    losses: list[torch.Tensor] = []
    batches = iter(loader)
    for step in range(steps):
        try:
            images, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, _ = next(batches)
        x = normalize(images.to(device, non_blocking=True))
        with torch.inference_mode():
            target = teacher.forward_features(x)
        loss = F.mse_loss(student.forward_features(x), target.clone())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if on_step is not None:
            on_step(step, losses[-1])
    student.eval()
    return losses
