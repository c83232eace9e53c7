"""The SigLIP objective (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training", algorithm 1):
an independent binary classification of every image-text pair of the batch.

Followed: open_clip's ``src/open_clip/loss.py`` (``SigLipLoss``, the tests' oracle). Departure: across
processes the text embeddings are *gathered* with :func:`selfsup.distributed.gather` (one all-gather,
a reduce-scatter backward) instead of open_clip's chunked neighbour exchange (``bidir``): the same
loss and gradients, one collective instead of ``world - 1`` exchanges, at the memory of a
``[N, world * N]`` logit block per process.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class SigLIPLoss(nn.Module):
    """Pairwise sigmoid loss between ``N`` image and ``N`` text embeddings (row ``i`` of each a pair).

    Logits are ``t * cos(image, text) + b`` for every image-text pair of the (global) batch, the
    label is +1 for the matching pair and -1 otherwise, and the loss is
    ``-sum log sigmoid(label * logit) / N`` over this process's images against every text. ``t`` is
    ``exp(logit_scale)`` (init ``logit_scale_init``: 10) and ``b`` the learnable ``logit_bias``
    (init -10), as in the paper; neither is clamped.

    With ``gather_distributed`` under a process group, this process's images meet the texts of every
    process: the mean of the processes' losses is the loss of one process holding the whole batch.

    Shapes:
        image, text: ``[N, D]`` embeddings (normalised here). Returns a scalar.
    """

    def __init__(
        self,
        logit_scale_init: float = 10.0,
        logit_bias_init: float = -10.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if (
            not isinstance(logit_scale_init, (int, float))
            or not math.isfinite(logit_scale_init)
            or logit_scale_init <= 0
        ):
            raise ValueError(f"logit_scale_init must be a finite number > 0, got {logit_scale_init!r}.")
        if not isinstance(logit_bias_init, (int, float)) or not math.isfinite(logit_bias_init):
            raise ValueError(f"logit_bias_init must be a finite number, got {logit_bias_init!r}.")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias_init)))
        self.gather_distributed = bool(gather_distributed)

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)``, a 0-d tensor."""
        return self.logit_scale.exp()

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if image.ndim != 2 or image.shape != text.shape:
            raise ValueError(
                f"SigLIPLoss expects two [N, D] tensors of the same shape, got {tuple(image.shape)} and {tuple(text.shape)}."
            )
        n = image.shape[0]
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        if self.gather_distributed and distributed.is_distributed():
            all_text, offset = distributed.gather(text), distributed.rank() * n
        else:
            all_text, offset = text, 0
        logits = self.scale() * image @ all_text.T + self.logit_bias  # [N, world * N]
        rows = torch.arange(n, device=image.device)
        labels = torch.full_like(logits, -1.0).index_put_((rows, rows + offset), logits.new_ones(()))
        return -F.logsigmoid(labels * logits).sum() / n
