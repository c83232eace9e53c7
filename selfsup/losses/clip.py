"""The CLIP objective (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", fig. 3): a symmetric cross entropy over the image-text similarities of a batch of pairs.

Followed: open_clip's ``src/open_clip/loss.py`` (``ClipLoss``, which the tests use as the oracle) in
its ``local_loss=True, gather_with_grad=True`` form. Departures: the gather is
:func:`selfsup.distributed.gather` (one all-gather for both towers, a reduce-scatter backward), and the
learnable temperature lives in the loss and is clamped in the forward pass (open_clip clamps the
parameter in place after each optimiser step): ``min(exp(logit_scale), max_logit_scale)``, no host
sync either way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class CLIPLoss(nn.Module):
    """Symmetric InfoNCE between ``N`` image and ``N`` text embeddings (row ``i`` of each is a pair).

    Every image is classified among the texts of the (global) batch and every text among the images,
    with logits ``s * cos(image, text)``; the loss is the mean of the two cross entropies. ``s`` is
    ``exp(logit_scale)``, a learnable scalar initialised at ``logit_scale_init`` (CLIP: 1/0.07) and
    clamped at ``max_logit_scale`` (CLIP: 100).

    With ``gather_distributed`` under a process group, this process's rows are contrasted with the
    embeddings of every process (``world * N`` candidates, gradients flowing back to their owners),
    and each process computes only its own rows of the global logit matrix: the mean of the
    processes' losses is the loss of one process holding the whole batch, and DDP's gradient average
    is its gradient.

    Shapes:
        image, text: ``[N, D]`` embeddings (normalised here). Returns a scalar.
    """

    def __init__(
        self,
        logit_scale_init: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("logit_scale_init", logit_scale_init), ("max_logit_scale", max_logit_scale)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
        if logit_scale_init > max_logit_scale:
            raise ValueError(
                f"logit_scale_init ({logit_scale_init}) exceeds max_logit_scale ({max_logit_scale}): lower it."
            )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
        self.max_logit_scale = float(max_logit_scale)
        self.gather_distributed = bool(gather_distributed)

    def scale(self) -> torch.Tensor:
        """``min(exp(logit_scale), max_logit_scale)``, a 0-d tensor."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if image.ndim != 2 or image.shape != text.shape:
            raise ValueError(
                f"CLIPLoss expects two [N, D] tensors of the same shape, got {tuple(image.shape)} and {tuple(text.shape)}."
            )
        n = image.shape[0]
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        if self.gather_distributed and distributed.is_distributed():
            both = distributed.gather(torch.cat([image, text], dim=1))  # one collective for both towers
            all_image, all_text = both.split(image.shape[1], dim=1)
            offset = distributed.rank() * n
        else:
            all_image, all_text, offset = image, text, 0
        scale = self.scale()
        labels = torch.arange(n, device=image.device) + offset
        per_image = scale * image @ all_text.T  # [N, world * N]
        per_text = scale * text @ all_image.T
        return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2
