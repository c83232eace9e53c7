"""iBOT's masked-patch self-distillation loss (Zhou et al., 2022, "iBOT: Image BERT Pre-Training
with Online Tokenizer", sec. 3; as used by Oquab et al., 2023, "DINOv2", sec. 4).

Followed: facebookresearch/dinov2 ``dinov2/loss/ibot_patch_loss.py`` (``iBOTPatchLoss``:
``forward_masked``, ``softmax_center_teacher``, the centre's EMA) and ``dinov2/data/collate.py``
(``masks_weight``). The Sinkhorn-Knopp teacher is :func:`selfsup.losses.sinkhorn.sinkhorn_knopp`.
Departure: the centre's update is the mean over the masked patches of every process (one all-reduce
of the sum and the count); the reference averages each process's own mean, which differs where the
processes mask different numbers of patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed
from selfsup.losses.sinkhorn import sinkhorn_knopp


class IBOTPatchLoss(nn.Module):
    """Cross-entropy between the teacher's distribution over ``out_dim`` prototypes for each masked
    patch (the teacher saw the patch) and the student's (the student saw the mask token there):

        loss = -1/N sum_n 1/M_n sum_{masked p of image n} sum_k P_t(n, p)_k log P_s(n, p)_k

    over the ``N`` images of the batch (every masked global crop and every unmasked one: an image
    without masked patches adds 0 but still counts in ``N``), ``M_n`` the number of masked patches of
    image ``n``, ``log P_s = log_softmax(s / tau_s)``. Each image weighs the same however many of its
    patches are masked.

    Teacher distributions come from :meth:`teacher_probabilities`: ``softmax((t - c) / tau_t)`` with
    the centre ``c`` (an EMA, updated by :meth:`update_center` after the loss, as ``DINOLoss``) or
    Sinkhorn-Knopp over the masked patches of every process.

    Args:
        out_dim: ``K``, the number of prototypes of the head the patches go through.
        student_temperature: ``tau_s`` > 0 (0.1).
        center_momentum: the centre's EMA momentum in ``[0, 1)`` (0.9).

    Shapes:
        student_out: ``[M, K]`` head outputs of the masked patches, in the row-major order of
            ``masks`` (``masks.flatten().nonzero()``).
        teacher_probs: ``[M, K]``, the same patches' teacher distributions (detached here).
        masks: ``[N, L]`` bool, True where the student saw the mask token.
        weights: ``[M]``, ``1 / M_n`` of each masked patch's image (computed from ``masks`` when
            None; pass them computed where ``masks`` lives on the CPU, as the reference's collate
            does, since indexing a device mask reads the device).
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temperature: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(
                f"out_dim must be an int >= 1 (the iBOT head's output dimension), got {out_dim!r}."
            )
        if not student_temperature > 0:
            raise ValueError(f"student_temperature must be > 0, got {student_temperature!r}.")
        if not 0.0 <= center_momentum < 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1) (0.9 in DINOv2), got {center_momentum!r}.")
        self.out_dim = out_dim
        self.student_temperature = float(student_temperature)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim), persistent=True)

    def forward(
        self,
        student_out: torch.Tensor,
        teacher_probs: torch.Tensor,
        masks: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if (
            student_out.ndim != 2
            or student_out.shape != teacher_probs.shape
            or student_out.shape[1] != self.out_dim
        ):
            raise ValueError(
                f"student_out and teacher_probs must both be [M, K={self.out_dim}] (the masked patches), got "
                f"{tuple(student_out.shape)} and {tuple(teacher_probs.shape)}."
            )
        if masks.ndim != 2 or masks.dtype != torch.bool:
            raise ValueError(
                f"masks must be a [N, L] bool tensor (True: masked), got {masks.dtype} {tuple(masks.shape)}."
            )
        if weights is None:
            weights = patch_weights(masks, _upcast(student_out).dtype)
        if weights.shape != (student_out.shape[0],):
            raise ValueError(
                f"weights must be [M={student_out.shape[0]}], one per masked patch, got {tuple(weights.shape)}: "
                "the masks and the patch rows disagree."
            )
        log_p_student = F.log_softmax(_upcast(student_out) / self.student_temperature, dim=-1)
        per_patch = (_upcast(teacher_probs.detach()) * log_p_student).sum(dim=-1)
        return -(per_patch * weights.to(per_patch.dtype)).sum() / masks.shape[0]

    @torch.no_grad()
    def teacher_probabilities(
        self, teacher_out: torch.Tensor, temperature: float, centering: str = "softmax"
    ) -> torch.Tensor:
        """``[M, K]`` teacher logits of the masked patches → distributions: ``softmax`` centring
        (``softmax((t - c) / tau)``, float32) or ``sinkhorn`` (3 iterations, over every process's
        masked patches)."""
        if centering == "softmax":
            return F.softmax((_upcast(teacher_out) - self.center) / temperature, dim=-1)
        if centering == "sinkhorn":
            return sinkhorn_knopp(teacher_out, temperature, iterations=3)
        raise ValueError(f"centering must be 'softmax' or 'sinkhorn', got {centering!r}.")

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher_out)``, the mean over the masked patches of every process
        (no host sync). Call it once per step on every process, after the loss. A step where no
        process masked a patch leaves the centre as it was."""
        rows = _upcast(teacher_out.detach())
        total = distributed.all_reduce_sum(torch.cat([rows.sum(dim=0), rows.new_full((1,), rows.shape[0])]))
        mean = total[None, :-1] / total[-1].clamp_min(1)
        moved = self.center * self.center_momentum + mean * (1.0 - self.center_momentum)
        self.center.copy_(torch.where(total[-1] > 0, moved, self.center))


def patch_weights(masks: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[N, L]`` bool masks → ``[M]``: ``1 / M_n`` for each masked patch, in row-major order (the
    reference's ``masks_weight``). Indexes by the mask: compute it on the CPU to keep the device
    unread."""
    per_image = 1.0 / masks.sum(dim=-1).clamp(min=1).to(dtype)
    return per_image[:, None].expand_as(masks)[masks]


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
