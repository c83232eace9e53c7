"""Feature distillation: the student's (projected) features regress the frozen teacher's."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class FeatureDistillationLoss(nn.Module):
    """Distance between student and teacher features, averaged over every feature vector.

    ``cosine``: ``1 - cos(s, t)`` (scale-free: the usual choice for a pooled embedding whose norm
    carries no meaning); ``mse``: the squared error averaged over all elements, as lightly-train's
    distillation (``lightly_train/_methods/distillationv2/distillationv2_loss.py``) uses on patch
    tokens. Both are 0 exactly when the student reproduces the teacher (up to scale for cosine).

    ``center_momentum`` (None: off) centres both sides on a running mean of the teacher's
    features, ``d(s - c, t - c)`` with ``c <- m c + (1 - m) mean(t)`` (over all processes; the
    first batch's mean starts it), as DINO centres its teacher. Why: the pooled features of a
    contrastive teacher often share one dominant direction (mean pairwise cosine 0.75 over CIFAR-10
    test images for the teacher of BENCHMARKS.md's distillation run), so the uncentred cosine is
    mostly satisfied by that direction and teaches little about what tells images apart.
    Subtracting the same ``c`` from both sides keeps the loss 0 exactly for a student that
    reproduces the teacher; it changes the cosine only (the MSE is translation-invariant). Without
    a centre, the loss is a plain function of its inputs; with one, call :meth:`update_center`
    once per step with that step's teacher features, before the loss (so the first step is
    centred too).

    Shapes: ``student``, ``teacher``: ``[..., D]`` of the same shape. Returns a scalar.
    """

    center: torch.Tensor
    center_ready: torch.Tensor

    def __init__(
        self,
        kind: Literal["cosine", "mse"] = "cosine",
        dim: int | None = None,
        center_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("cosine", "mse"):
            raise ValueError(f"kind must be 'cosine' or 'mse', got {kind!r}.")
        self.kind = kind
        self.center_momentum = center_momentum
        if center_momentum is not None:
            if isinstance(center_momentum, bool) or not 0.0 <= center_momentum < 1.0 or dim is None:
                raise ValueError(
                    f"center_momentum must lie in [0, 1) (0.9 as in DINO) and needs the feature width dim, "
                    f"got center_momentum={center_momentum!r}, dim={dim!r}."
                )
            self.register_buffer("center", torch.zeros(dim), persistent=True)
            self.register_buffer("center_ready", torch.zeros((), dtype=torch.bool), persistent=True)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(
                f"student and teacher features must have the same shape, got {tuple(student.shape)} and "
                f"{tuple(teacher.shape)}: project the student to the teacher's width first."
            )
        teacher = teacher.detach().to(student.dtype)
        if self.center_momentum is not None:
            center = self.center.to(student.dtype)
            student, teacher = student - center, teacher - center
        if self.kind == "cosine":
            return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
        return F.mse_loss(student, teacher)

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher)`` over the rows of every process (the first call sets
        ``c`` to the mean); one all-reduce of ``[D + 1]`` (:func:`selfsup.distributed.mean_rows`), no
        host sync."""
        if self.center_momentum is None:
            return
        mean = distributed.mean_rows(teacher.detach().to(self.center.dtype).reshape(-1, teacher.shape[-1]))
        updated = self.center * self.center_momentum + mean * (1.0 - self.center_momentum)
        self.center.copy_(torch.where(self.center_ready, updated, mean))
        self.center_ready.fill_(True)
