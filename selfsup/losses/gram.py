"""Gram anchoring (Siméoni et al., 2025, "DINOv3", sec. 4): the student's patch-to-patch cosine
similarities are pulled towards a teacher's, which keeps dense features local over long training.

Followed: facebookresearch/dinov3 ``dinov3/loss/gram_loss.py`` (``GramLoss``: L2-normalised patch
features, the Gram matrices per image or over the whole batch, optionally negative similarities set
to 0, the mean squared error between them, in float32) and ``dinov3/train/ssl_meta_arch.py`` (the
student's patch tokens of the global crops against the teacher's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GramLoss(nn.Module):
    """``mean((G_s - G_t)^2)`` with ``G = Z Z^T`` over L2-normalised patch features ``Z``.

    Args:
        image_level: one Gram matrix ``[N, N]`` per image (inputs ``[B, N, D]``); False: one over
            every patch of the batch (``[B * N, B * N]``; dinov3's default, quadratic in the batch).
        normalize: L2-normalise the features first (cosine similarities; dinov3's default).
        remove_negative: set negative similarities of both matrices to 0 before the error.

    The teacher's features are detached. Computed in float32.
    """

    def __init__(
        self, image_level: bool = True, normalize: bool = True, remove_negative: bool = False
    ) -> None:
        super().__init__()
        self.image_level = bool(image_level)
        self.normalize = bool(normalize)
        self.remove_negative = bool(remove_negative)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape or student.ndim != 3:
            raise ValueError(
                f"student and teacher must both be [B, N, D] patch features, got {tuple(student.shape)} "
                f"and {tuple(teacher.shape)}."
            )
        grams = []
        for features in (student.float(), teacher.detach().float()):
            if self.normalize:
                features = F.normalize(features, dim=-1)
            if not self.image_level:
                features = features.flatten(0, 1)
            gram = features @ features.transpose(-1, -2)
            grams.append(gram.clamp_min(0.0) if self.remove_negative else gram)
        return F.mse_loss(grams[0], grams[1])
