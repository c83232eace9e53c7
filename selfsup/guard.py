"""Numerical faults: a NaN or infinite step never reaches the weights, and never costs a host sync.

Each training step the guard decides *on the device* whether the step is bad: the loss or any
gradient is not finite (on any process: the flag is all-reduced, a device collective). A bad step
is skipped on the device:

- with a fused optimiser (AdamW / SGD with ``fused=True``, the default on GPUs) the flag is handed to
  the kernel as ``found_inf``, as ``torch.amp.GradScaler`` does: parameters, moments and step
  counts stay exactly as they were;
- with any other optimiser the gradients are zeroed through ``torch.where``; weights then still
  move by weight decay and momentum for that step (use a fused optimiser to avoid even that).

The host reads the flag one step late, from a copy started without blocking, when the device has
long finished with it: no step waits on it. Then, by default (``skip_nonfinite_steps=0``), training
stops with an error naming the bad step and the last good checkpoint, which is kept; with
``skip_nonfinite_steps=N`` up to N bad steps are skipped with a warning each, and the N+1-th stops
training. Under DDP every process skips or stops together.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup import distributed


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN or infinite loss or gradient."""


def _last_good_checkpoint(trainer) -> str:
    callback = getattr(trainer, "checkpoint_callback", None)
    path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    return f"'{path}' (kept)" if path else "none yet (no checkpoint was written before this step)"


def _repair_batchnorm_statistics(module: nn.Module) -> list[str]:
    """The skipped step's forward pass still updated BatchNorm running statistics; where they
    became NaN / infinite, reset them (the weights themselves are untouched by a skipped step).
    Host-side, only after a bad step was found."""
    repaired = []
    for name, layer in module.named_modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
            if not (torch.isfinite(layer.running_mean).all() and torch.isfinite(layer.running_var).all()):
                layer.reset_running_stats()
                repaired.append(name)
    return repaired


def non_finite_flag(loss: torch.Tensor | None, grads: list[torch.Tensor]) -> torch.Tensor:
    """A 0-dim float32 tensor on the device (the shape fused optimisers take as ``found_inf``): 1.0 if the loss or any gradient is not finite on any
    process, else 0.0. No host sync: everything stays on the device."""
    device = grads[0].device if grads else loss.device
    flag = torch.zeros((), device=device, dtype=torch.float32)
    if loss is not None:
        flag = flag + (~torch.isfinite(loss.detach().float())).float().reshape(())
    if grads:
        # one fused kernel over all gradients (the one GradScaler uses), grouped by dtype and device
        by_kind: dict[tuple, list[torch.Tensor]] = {}
        for g in grads:
            by_kind.setdefault((g.device, g.dtype), []).append(g)
        found = torch.zeros(1, device=device, dtype=torch.float32)
        one = torch.ones(1, device=device, dtype=torch.float32)
        for (dev, _), group in by_kind.items():
            part = torch.zeros(1, device=dev, dtype=torch.float32)
            torch._amp_foreach_non_finite_check_and_unscale_(group, part, one.to(dev))
            found = found + part.to(device)
        flag = flag + found.reshape(())
    return (distributed.all_reduce_sum(flag) > 0).float()


class NonFiniteGuard:
    """The guard of one LightningModule (see the module docstring).

    Usage: ``check(loss, optimizer)`` from ``on_before_optimizer_step`` (after backward, before the
    optimiser's update), and ``collect(module)`` at the start of the next step and at the end of
    training (host side, one step late).
    """

    def __init__(self, max_skipped: int = 0) -> None:
        if max_skipped < 0:
            raise ValueError(f"skip_nonfinite_steps must be >= 0, got {max_skipped}.")
        self.max_skipped = max_skipped
        self.skipped = 0
        self._pending: tuple[int, int, torch.Tensor, torch.cuda.Event | None] | None = None

    def check(
        self, loss: torch.Tensor | None, optimizer: torch.optim.Optimizer, step: int, epoch: int
    ) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads and loss is None:
            return
        flag = non_finite_flag(loss, grads)
        if getattr(optimizer, "defaults", {}).get("fused"):
            optimizer.found_inf = flag  # read by the fused kernel: the update is skipped on the device
        else:
            if hasattr(optimizer, "found_inf"):
                del optimizer.found_inf
            keep = flag == 0
            for g in grads:
                g.copy_(torch.where(keep, g, torch.zeros_like(g)))
        # copy the flag to the host without waiting; read one step later (collect)
        if flag.device.type == "cuda":
            host = torch.empty((), dtype=torch.float32, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host, event = flag, None
        self._pending = (step, epoch, host, event)

    def collect(self, module) -> None:
        """Host side: act on the previous step's flag (raise, or count and warn a skip)."""
        if self._pending is None:
            return
        step, epoch, host, event = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()  # long done by now: the step after it has been queued
        if float(host) == 0.0:
            return
        repaired = _repair_batchnorm_statistics(module)
        note = f" Reset non-finite BatchNorm statistics of {repaired}." if repaired else ""
        if self.skipped < self.max_skipped:
            self.skipped += 1
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"non-finite loss or gradient at step {step} (epoch {epoch}): step skipped, weights unchanged "
                f"({self.skipped} of at most {self.max_skipped} skipped steps).{note}",
                category=UserWarning,
            )
            module.log(
                "train/skipped_nonfinite_steps",
                torch.tensor(float(self.skipped)),
                on_step=True,
                on_epoch=False,
            )
            return
        trainer = module.trainer
        raise NonFiniteLossError(
            f"the training loss or a gradient is NaN / infinite at step {step} (epoch {epoch}); that step did not "
            f"change the weights and training stopped. Last good checkpoint: {_last_good_checkpoint(trainer)}. "
            "Fixes: lower the learning rate (optim.base_lr) or lengthen the warm-up, clip gradients "
            "(trainer.gradient_clip_val: 1.0), use precision bf16-mixed or 32-true instead of 16-mixed, or let a "
            "few bad steps pass with model.init_args.skip_nonfinite_steps: N. Resume from the checkpoint with "
            "--ckpt_path."
        )
