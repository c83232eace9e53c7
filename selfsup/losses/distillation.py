"""Feature distillation: the student's (projected) features regress the frozen teacher's."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class FeatureDistillationLoss(nn.Module):
    """Distance between student and teacher features, averaged over every feature vector.

    ``cosine``: ``1 - cos(s, t)`` (scale-free: the usual choice for a pooled embedding whose norm
    carries no meaning); ``mse``: the squared error averaged over all elements, as lightly-train's
    distillation (``lightly_train/_methods/distillationv2/distillationv2_loss.py``) uses on patch
    tokens. Both are 0 exactly when the student reproduces the teacher (up to scale for cosine).

    Shapes: ``student``, ``teacher``: ``[..., D]`` of the same shape. Returns a scalar.
    """

    def __init__(self, kind: Literal["cosine", "mse"] = "cosine") -> None:
        super().__init__()
        if kind not in ("cosine", "mse"):
            raise ValueError(f"kind must be 'cosine' or 'mse', got {kind!r}.")
        self.kind = kind

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(
                f"student and teacher features must have the same shape, got {tuple(student.shape)} and "
                f"{tuple(teacher.shape)}: project the student to the teacher's width first."
            )
        teacher = teacher.detach().to(student.dtype)
        if self.kind == "cosine":
            return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
        return F.mse_loss(student, teacher)
