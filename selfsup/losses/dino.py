"""DINO's self-distillation loss with a centred, sharpened teacher (Caron et al., 2021, "Emerging
Properties in Self-Supervised Vision Transformers", Algorithm 1 and sec. 3.1).

Followed: facebookresearch/dino ``main_dino.py`` (``DINOLoss``: the pairs of crops, the averaging,
the centre's EMA with its all-reduce, the teacher-temperature warm-up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened distribution over ``out_dim``
    prototypes and the student's, over every pair (teacher global crop ``i``, student crop ``v``)
    with ``v != i``:

        P_t(i) = softmax((t_i - c) / tau_t),   log P_s(v) = log_softmax(s_v / tau_s)
        loss = mean over the pairs of  mean over the batch of  -sum_k P_t(i)_k log P_s(v)_k

    (``2 * n_crops - 2`` pairs; the reference sums each pair's batch mean and divides by the number
    of pairs, which this equals). The teacher side is detached: only the student gets gradients.

    ``forward`` does not touch the centre: the training step calls :meth:`update_center` with the
    same teacher outputs after computing the loss (the reference calls it at the end of its
    ``forward``). Keeping ``forward`` pure means evaluating the loss (validation, logging, a second
    call under gradient checkpointing) never moves the centre; the one collective of the update is
    issued once per step, on every process, by the step.

    Args:
        out_dim: ``K``, the number of prototypes (the head's ``out_dim``).
        student_temperature: ``tau_s`` > 0 (0.1 in the paper).
        center_momentum: ``m`` in ``[0, 1)`` of the centre's EMA ``c <- m c + (1 - m) mean(t)``.

    Shapes:
        student_out: a list of ``n_crops`` tensors ``[B, K]`` (the 2 global crops first, in the
            teacher's order, then the local crops), or their concatenation ``[n_crops * B, K]``.
        teacher_out: ``[2 * B, K]``: the teacher's outputs for global crop 1 then global crop 2.
        teacher_temperature: ``tau_t`` > 0, a float or a 0-d tensor (see :func:`teacher_temperature`).
        Returns a scalar. Under DDP each process's loss is over its own batch, and DDP's gradient
        average makes it the loss over the global batch.

    The ``center`` buffer ``[1, K]`` (float32) is persistent: it is saved in checkpoints and restored
    on resume.
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temperature: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be an int >= 1 (the head's output dimension), got {out_dim!r}.")
        if not _positive(student_temperature):
            raise ValueError(f"student_temperature must be a finite number > 0, got {student_temperature!r}.")
        if (
            isinstance(center_momentum, bool)
            or not isinstance(center_momentum, (int, float))
            or not 0.0 <= center_momentum < 1.0
        ):
            raise ValueError(
                f"center_momentum must lie in [0, 1) (0.9 in DINO), got {center_momentum!r}: with 1 the "
                "centre never moves."
            )
        self.out_dim = out_dim
        self.student_temperature = float(student_temperature)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim), persistent=True)

    def forward(
        self,
        student_out: torch.Tensor | Sequence[torch.Tensor],
        teacher_out: torch.Tensor,
        teacher_temperature: float | torch.Tensor,
    ) -> torch.Tensor:
        batch = self._check_teacher(teacher_out)
        student = self._student_crops(student_out, batch)  # [n_crops, B, K]
        if isinstance(teacher_temperature, torch.Tensor):
            if teacher_temperature.numel() != 1:
                raise ValueError(
                    f"teacher_temperature must be a scalar, got a tensor of shape {tuple(teacher_temperature.shape)}."
                )
            # a tensor temperature is not checked for > 0: reading its value would sync with the device
            teacher_temperature = teacher_temperature.reshape(()).to(torch.float32)
        elif not _positive(teacher_temperature):
            raise ValueError(f"teacher_temperature must be a finite number > 0, got {teacher_temperature!r}.")
        n_crops = student.shape[0]

        # float32 for the K-way softmaxes: with K = 65536 a bf16 sum over prototypes loses digits
        log_p_student = F.log_softmax(_upcast(student) / self.student_temperature, dim=-1)  # [V, B, K]
        teacher = (_upcast(teacher_out.detach()) - self.center) / teacher_temperature
        p_teacher = F.softmax(teacher, dim=-1).view(2, batch, -1)  # [2, B, K]

        # sum over pairs (i, v != i) of <P_t(i), log P_s(v)> = <P_t(i), sum_v log P_s(v) - log P_s(i)>:
        # 2 products of [B, K] instead of the reference's 2 * (n_crops - 1), the same value (forward +
        # backward 2.4x faster than the pair loop on CPU at K = 65536, B = 32, 2 + 6 crops:
        # benchmarks/dino_loss.py)
        log_p_sum = log_p_student.sum(dim=0)  # [B, K]
        cross = (p_teacher * (log_p_sum - log_p_student[:2])).sum()
        n_pairs = 2 * n_crops - 2
        return -cross / (batch * n_pairs)

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher_out)``, the mean over the rows of every process (one
        all-reduce of ``[K + 1]``; no host sync). Call it once per training step on every process,
        after the loss, with the teacher outputs ``[2 * B, K]`` that the loss used."""
        self._check_teacher(teacher_out)
        mean = distributed.mean_rows(_upcast(teacher_out.detach()))[None]
        self.center.mul_(self.center_momentum).add_(mean, alpha=1.0 - self.center_momentum)

    # --- checks ------------------------------------------------------------------------------------

    def _check_teacher(self, teacher_out: torch.Tensor) -> int:
        if not isinstance(teacher_out, torch.Tensor) or teacher_out.ndim != 2:
            raise ValueError(
                "teacher_out must be one [2 * B, K] tensor (the teacher's outputs for the 2 global crops, "
                f"concatenated), got {_describe(teacher_out)}."
            )
        rows, k = teacher_out.shape
        if k != self.out_dim:
            raise ValueError(
                f"teacher_out has {k} prototypes but the loss was built with out_dim={self.out_dim}."
            )
        if rows == 0 or rows % 2:
            raise ValueError(
                f"teacher_out has {rows} rows: it must hold the 2 global crops of the batch, [2 * B, K] with B >= 1."
            )
        return rows // 2

    def _student_crops(self, student_out: torch.Tensor | Sequence[torch.Tensor], batch: int) -> torch.Tensor:
        if isinstance(student_out, torch.Tensor):
            if student_out.ndim != 2 or student_out.shape[0] % batch:
                raise ValueError(
                    f"student_out must be [n_crops * B, K] with B = {batch} (half of teacher_out's rows), "
                    f"got {_describe(student_out)}."
                )
            student = student_out.reshape(student_out.shape[0] // batch, batch, student_out.shape[1])
        else:
            crops = list(student_out)
            if not crops or any(not isinstance(c, torch.Tensor) or c.ndim != 2 for c in crops):
                raise ValueError("student_out must be a list of [B, K] tensors, one per crop.")
            shapes = {tuple(c.shape) for c in crops}
            if shapes != {(batch, self.out_dim)}:
                raise ValueError(
                    f"every student crop must be [B, K] = [{batch}, {self.out_dim}] (B: half of teacher_out's "
                    f"rows), got {sorted(shapes)}."
                )
            student = torch.stack(crops)
        if student.shape[-1] != self.out_dim:
            raise ValueError(
                f"student_out has {student.shape[-1]} prototypes but the loss was built with out_dim={self.out_dim}."
            )
        if student.shape[0] < 2:
            raise ValueError(
                f"student_out holds {student.shape[0]} crop(s): it must hold at least the 2 global crops "
                "(first, in the teacher's order), then any local crops."
            )
        return student


def teacher_temperature(
    epoch: int, warmup_epochs: int = 30, warmup_temperature: float = 0.04, temperature: float = 0.07
) -> float:
    """DINO's teacher temperature at ``epoch`` (0-based): linear from ``warmup_temperature`` to
    ``temperature`` over the first ``warmup_epochs`` epochs, then constant. The closed form of the
    reference's per-epoch array ``concatenate((linspace(start, end, W), ones(E - W) * end))``:

        tau(e) = start + (end - start) * e / (W - 1)   for e < W  (start when W = 1)
        tau(e) = end                                   for e >= W

    (so the warm-up reaches ``end`` at epoch ``W - 1``, as ``linspace`` does). Epochs beyond the run's
    length keep ``end``."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0, got {epoch!r}.")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}.")
    for name, value in (("warmup_temperature", warmup_temperature), ("temperature", temperature)):
        if not _positive(value):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    if epoch >= warmup_epochs:
        return float(temperature)
    if warmup_epochs == 1:
        return float(warmup_temperature)
    return warmup_temperature + (temperature - warmup_temperature) * epoch / (warmup_epochs - 1)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 → float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _positive(value: object) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    )


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
