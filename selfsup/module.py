"""What every selfsup LightningModule shares (pretraining methods and fine-tuning alike):
normalisation, the non-finite guard, logging without host syncs, optimiser groups decided before
any wrapping, the checkpoint metadata, and the ``compile`` option."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from selfsup import distributed
from selfsup.augment.normalize import Normalize
from selfsup.contract import (
    CHECKPOINT_KEY,
    CheckpointError,
    CheckpointMeta,
    Kind,
    plain,
    upgrade_checkpoint,
)
from selfsup.guard import NonFiniteGuard
from selfsup.optim import OptimConfig, decayed_names, optimizer_and_schedule, param_groups

EPOCH_LOSS_KEY = "selfsup_epoch_loss"
"""Checkpoint key of the interrupted epoch's ``[sum of loss x batch size, samples]`` (exact
``train/loss_epoch`` across a resume)."""


class SelfSupModule(L.LightningModule):
    """Base of :class:`~selfsup.methods.base.PretrainModule` and :class:`~selfsup.FineTune`.

    Subclasses set ``self.mean``, ``self.std`` (via :meth:`set_normalization`), ``self.optim`` and
    ``self.guard_steps`` (via :meth:`set_guard`), and implement :meth:`checkpoint_meta`.
    """

    kind: ClassVar[Kind] = "pretrain"

    # --- preprocessing -----------------------------------------------------------------------------

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.normalize = Normalize(self.mean, self.std)

    # --- the non-finite guard ----------------------------------------------------------------------

    def set_guard(self, skip_nonfinite_steps: int) -> None:
        self.skip_nonfinite_steps = skip_nonfinite_steps
        self.nonfinite_guard = NonFiniteGuard(skip_nonfinite_steps)
        self._guarded_loss: torch.Tensor | None = None

    def guard(self, loss: torch.Tensor) -> torch.Tensor:
        """Register this step's loss with the non-finite guard and return it unchanged. The guard
        decides on the device after backward (see ``selfsup.guard``); no host sync here."""
        self._guarded_loss = loss
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        trainer = self.trainer
        self.nonfinite_guard.check(self._guarded_loss, optimizer, trainer.global_step, trainer.current_epoch)
        self._guarded_loss = None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.nonfinite_guard.collect(self)  # the previous step's flag, read one step late

    def on_train_end(self) -> None:
        self.nonfinite_guard.collect(self)

    # --- logging -----------------------------------------------------------------------------------

    def log_step(self, loss: torch.Tensor, batch_size: int, **extra: float | torch.Tensor) -> None:
        """Log the loss (``train/loss_step``; its epoch mean ``train/loss_epoch`` at the epoch's end),
        the learning rate and method-specific values, all as tensors: device values stay on the
        device (Lightning reads them at its logging interval), host values (the learning rate,
        counts) are CPU tensors, so nothing is copied or synced here."""
        self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        self._add_to_epoch_loss(loss, batch_size)
        optimizer = self.optimizers(use_pl_optimizer=False) if self._trainer is not None else None
        if optimizer is not None and not isinstance(optimizer, list):
            self.log(
                "train/lr", torch.tensor(float(optimizer.param_groups[0]["lr"])), on_step=True, on_epoch=False
            )
            held = next((g for g in optimizer.param_groups if g.get("held")), None)
            if held is not None:  # a head warm-up: the backbone's own rate (0 while it is held)
                self.log("train/backbone_lr", torch.tensor(float(held["lr"])), on_step=True, on_epoch=False)
        for name, value in extra.items():
            value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=batch_size)

    def _add_to_epoch_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Add the step's loss to the epoch's ``[sum of loss x batch size, samples]`` on the device.
        Lightning's own epoch mean lives outside checkpoints, so after a resume it averaged only the
        resumed steps; this one is saved with every checkpoint. Steps with a non-finite loss (skipped
        by the guard) are left out."""
        weighted = loss.detach().float().reshape(()) * batch_size
        finite = torch.isfinite(weighted)
        part = torch.stack([torch.where(finite, weighted, 0.0), torch.where(finite, float(batch_size), 0.0)])
        running = getattr(self, "_epoch_loss", None)
        self._epoch_loss = part if running is None else running.to(part.device) + part

    def on_train_epoch_end(self) -> None:
        running, self._epoch_loss = getattr(self, "_epoch_loss", None), None
        if running is not None:
            total = distributed.all_reduce_sum(running.clone())  # every process's samples
            self.log(
                "train/loss_epoch",
                total[0] / total[1].clamp_min(1),
                on_step=False,
                on_epoch=True,
                prog_bar=True,
            )

    # --- optimisation ------------------------------------------------------------------------------

    def no_weight_decay_names(self) -> set[str]:
        """Parameter names (or their last components) exempt from weight decay: every timm model's
        ``no_weight_decay()`` (position embeddings, class and register tokens)."""
        names: set[str] = set()
        for module in self.modules():
            if module is not self and hasattr(module, "no_weight_decay") and callable(module.no_weight_decay):
                names |= set(module.no_weight_decay())
        return names

    def setup(self, stage: str) -> None:
        # Runs before FSDP / DDP wrap the model: decide weight decay by name while shapes are real.
        if stage == "fit" and getattr(self, "_decayed", None) is None:
            self._decayed = decayed_names(self, self.no_weight_decay_names(), self.optim.decay_all)
        if stage == "fit" and getattr(self, "compile_model", False):
            self.compile_modules()

    # a head warm-up (see PretrainModule): parameters under these prefixes stay at learning rate 0 for
    # held_steps steps, then warm up over held_warmup_steps
    held_prefixes: tuple[str, ...] = ()
    held_steps: int = 0
    held_warmup_steps: int = 0

    def trainable_groups(self) -> list[dict]:
        """The optimiser's parameter groups (override for per-layer learning rates)."""
        decayed = getattr(self, "_decayed", None)
        return param_groups(
            self,
            self.optim.weight_decay,
            self.no_weight_decay_names(),
            decayed,
            layer_decay=self.optim.layer_decay,
            patch_embed_lr_mult=self.optim.patch_embed_lr_mult,
            held=self.held_prefixes if self.held_steps > 0 else (),
        )

    def configure_optimizers(self) -> dict:
        config: OptimConfig = self.optim
        result = optimizer_and_schedule(
            self.trainer,
            config,
            self.trainable_groups(),
            self.device,
            self.held_steps,
            self.held_warmup_steps,
        )
        scheduler = result["lr_scheduler"]["scheduler"]
        self.total_steps = scheduler.total_steps
        return result

    # --- torch.compile -----------------------------------------------------------------------------

    def compile_targets(self) -> list[nn.Module]:
        """The submodules that ``compile: true`` compiles (the encoder and heads by default)."""
        return [m for m in self.children() if any(True for _ in m.parameters())]

    def compile_modules(self) -> None:
        """``nn.Module.compile()`` in place on every target: parameter names, checkpoints and
        exports are unchanged (no ``_orig_mod.`` prefix), compilation happens at the first call."""
        for module in self.compile_targets():
            module.compile()

    # --- checkpoints -------------------------------------------------------------------------------

    def save_init_args(self, init_args: dict[str, Any]) -> None:
        """Record constructor arguments (pass ``locals()`` first thing in ``__init__``; a ``kwargs``
        dict is flattened) as plain hyperparameters: dataclasses become dicts, injected modules are
        left out. Plain values keep checkpoints loadable with ``weights_only=True``."""
        args = dict(init_args)
        args.update(args.pop("kwargs", None) or {})
        hparams = {
            k: plain(v)
            for k, v in args.items()
            if k not in ("self", "__class__") and not isinstance(v, nn.Module)
        }
        self.save_hyperparameters(hparams)

    def checkpoint_meta(self) -> CheckpointMeta:
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.checkpoint_meta().to_dict()
        # the epoch's loss so far, summed over processes (every process saves; rank 0 writes)
        running = getattr(self, "_epoch_loss", None)
        if running is not None:
            checkpoint[EPOCH_LOSS_KEY] = distributed.all_reduce_sum(running.detach().clone()).cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming (``--ckpt_path``): upgrade an older checkpoint in memory and refuse one of
        another method or kind with a :class:`~selfsup.contract.CheckpointError`."""
        if CHECKPOINT_KEY not in checkpoint:
            raise CheckpointError(
                "the checkpoint to resume from was not written by selfsup (no 'selfsup' record): pass a "
                "checkpoint written by `selfsup fit`."
            )
        meta = upgrade_checkpoint(checkpoint)
        running = checkpoint.get(EPOCH_LOSS_KEY)
        if running is not None:  # the global sum goes to one process, so the epoch's all-reduce adds it once
            self._epoch_loss = running.clone() if self.global_rank == 0 else torch.zeros_like(running)
        mine = self.checkpoint_meta()
        meta.require("the checkpoint to resume from", kind=mine.kind, method=mine.method)
