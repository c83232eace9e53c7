"""Callbacks that inject faults into training runs (imported by subprocesses of the fault tests)."""

import os

from lightning.pytorch.callbacks import Callback


class FailOnRank(Callback):
    """Raise on one process at one step, as a crash on one GPU would."""

    def __init__(self, rank: int = 1, step: int = 2) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise RuntimeError(
                f"injected failure on rank {self.rank} at step {self.step} (pid {os.getpid()})"
            )


class PoisonWeights(Callback):
    """Make one weight NaN before one step, as a diverging run or a bad kernel would."""

    def __init__(self, step: int = 2) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            import torch

            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))
