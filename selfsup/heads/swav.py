"""SwAV's prototypes (Caron et al., 2020, "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", sec. 3.1): ``K`` trainable unit vectors; a sample's scores are the dot products
of its L2-normalised embedding with them.

Followed: facebookresearch/swav ``src/resnet50.py`` (``prototypes``: a bias-free linear layer on the
normalised projection) and ``main_swav.py`` (``train``: the prototypes are re-normalised before every
step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwAVPrototypes(nn.Module):
    """``[N, dim]`` embeddings → ``[N, num_prototypes]`` scores, cosines once :meth:`normalize_` has
    run (the method calls it before every training step, as the reference).

    Args:
        dim: the embedding width (the projector's output, 128 in the paper).
        num_prototypes: ``K`` (3000 for ImageNet).
    """

    def __init__(self, dim: int = 128, num_prototypes: int = 3000) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_prototypes", num_prototypes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        self.layer = nn.Linear(dim, num_prototypes, bias=False)
        self.normalize_()

    @torch.no_grad()
    def normalize_(self) -> None:
        """Make every prototype a unit vector, in place (no gradient, no host sync)."""
        self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Scores of the (already normalised) embeddings against every prototype."""
        return self.layer(embeddings)
