"""A loud warning when a self-distillation teacher has collapsed to the uniform distribution.

DINO-style methods (DINO, DINOv2) centre and sharpen the teacher's output over ``K`` prototypes. When
centring wins, the teacher's distribution becomes uniform, its entropy ``log K``, and the student
learns nothing more: the loss keeps a plausible value and the run finishes, but the encoder is
barely better than its random initialisation. The logged entropy shows it long before the end.

A method takes part by logging its teacher's entropy (``train/teacher_entropy``, in nats) and
declaring ``max_entropies``: a mapping of logged entropy names to their maximum, ``log K``
(``{"train/teacher_entropy": math.log(out_dim)}``). Methods that declare nothing are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

# what to change, from the sweep on configs/dino/digits.yaml (BENCHMARKS.md, "DINO and MoCo v3 on
# the digits"): a lower temperature sharpens the teacher, a lower momentum lets it follow the student
ADVICE = (
    "lower the teacher temperature (teacher_temperature, warmup_teacher_temperature: 0.04 or less) and, "
    "in a short run, the teacher momentum (teacher_momentum 0.9 instead of 0.996), and check that the "
    "views share enough of the image for the student to predict the teacher"
)


class TeacherCollapseWarning(UserWarning):
    """The teacher's output entropy stays near its maximum, ``log K``: a uniform-teacher collapse."""


class CollapseWarning(Callback):
    """At the end of each training epoch past ``start`` of the run, compare each entropy the method
    declares in ``max_entropies`` with its maximum, and warn (a :class:`TeacherCollapseWarning`,
    on rank 0, once per metric and fit) when the last logged value is at least ``ratio`` of it. The
    warning names the metric, its value, ``log K`` and what to change.

    It reads the value Lightning already holds (``trainer.callback_metrics``, the last logged
    step's), once per epoch: nothing happens inside the training step.

    Args:
        ratio: the fraction of ``log K`` from which the teacher counts as uniform (0.98: 6.79 of
            log 1024 = 6.93 nats; the collapsed digits runs of BENCHMARKS.md end at 6.91-6.93).
        start: the fraction of the run's optimiser steps before which nothing is checked (early
            in a run the centre and the temperature warm-up move the entropy a lot). A run with no
            step or epoch limit is checked at every epoch's end.
    """

    def __init__(self, ratio: float = 0.98, start: float = 0.3) -> None:
        if not 0.0 < ratio <= 1.0 or not 0.0 <= start <= 1.0:
            raise ValueError(f"ratio must lie in (0, 1] and start in [0, 1], got {ratio} and {start}.")
        self.ratio = ratio
        self.start = start
        self.warned: set[str] = set()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.warned = set()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        maxima = getattr(pl_module, "max_entropies", None)
        if not isinstance(maxima, Mapping) or not maxima or trainer.sanity_checking:
            return
        total = trainer.estimated_stepping_batches
        if math.isfinite(total) and trainer.global_step < self.start * total:
            return
        for name, maximum in maxima.items():
            value = trainer.callback_metrics.get(name)
            if value is None or name in self.warned:
                continue
            value = float(value)  # once per epoch, outside the step
            if value >= self.ratio * maximum:
                self.warned.add(name)
                rank_zero_warn(
                    f"{name} = {value:.3f} at epoch {trainer.current_epoch} (step {trainer.global_step}) is "
                    f"{100 * value / maximum:.1f} % of its maximum log(K) = {maximum:.3f}: the teacher's output "
                    f"is uniform (collapsed): the student has nothing left to learn from it. To fix it, {ADVICE}.",
                    category=TeacherCollapseWarning,
                )
