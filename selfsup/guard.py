"""Numerical faults: a NaN or infinite loss never reaches the weights.

Every training step checks its loss (one scalar read per step, all processes agreeing). By default
(``skip_nonfinite_steps=0``) the first non-finite loss stops training *before* that step updates
anything, with an error naming the step and the last good checkpoint, which is kept. With
``skip_nonfinite_steps=N`` up to N such steps are skipped (no backward: no gradient reaches the
optimiser, so no weight changes; the step still counts in the learning-rate schedule) with a warning
each; the N+1-th stops training as above. Under DDP every process skips or stops together.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn

from selfsup import distributed


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN or infinite loss."""


def _last_good_checkpoint(trainer) -> str:
    callback = getattr(trainer, "checkpoint_callback", None)
    path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    return f"'{path}' (kept)" if path else "none yet (no checkpoint was written before this step)"


def _repair_batchnorm_statistics(module) -> None:
    """The skipped step's forward pass still updated BatchNorm running statistics; where they
    became NaN / infinite, reset them (the weights themselves are untouched by a skipped step)."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
            if not (torch.isfinite(layer.running_mean).all() and torch.isfinite(layer.running_var).all()):
                layer.reset_running_stats()
                rank_zero_warn(
                    f"reset the non-finite BatchNorm statistics of {type(layer).__name__} after a skipped step."
                )


def guard_loss(module, loss: torch.Tensor, max_skipped: int) -> torch.Tensor | None:
    """``loss`` if it is finite on every process; otherwise ``None`` (skip this step) while fewer than
    ``max_skipped`` steps were skipped, else raise :class:`NonFiniteLossError`."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if distributed.all_reduce_sum(bad).item() == 0:  # the one host read per step
        return loss
    trainer = module.trainer
    step, epoch = trainer.global_step, trainer.current_epoch
    skipped = getattr(module, "_skipped_nonfinite_steps", 0)
    if skipped < max_skipped:
        module._skipped_nonfinite_steps = skipped + 1
        _repair_batchnorm_statistics(module)
        rank_zero_warn(
            f"non-finite loss ({loss.item()}) at step {step} (epoch {epoch}): step skipped, weights unchanged "
            f"({skipped + 1} of at most {max_skipped} skipped steps).",
            category=UserWarning,
        )
        module.log("train/skipped_nonfinite_steps", float(skipped + 1), on_step=True, on_epoch=False)
        return None
    raise NonFiniteLossError(
        f"the training loss is {loss.item()} at step {step} (epoch {epoch}); training stopped before this step "
        f"changed the weights. Last good checkpoint: {_last_good_checkpoint(trainer)}. Fixes: lower the learning "
        "rate (optim.base_lr) or lengthen the warm-up, clip gradients (trainer.gradient_clip_val: 1.0), use "
        "precision bf16-mixed or 32-true instead of 16-mixed, or let a few bad steps pass with "
        "model.init_args.skip_nonfinite_steps: N. Resume from the checkpoint with --ckpt_path."
    )
