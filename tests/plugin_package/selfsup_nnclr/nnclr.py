"""NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor Contrastive
Learning of Visual Representations"): SimCLR whose positive for a view is the nearest neighbour of
its projection in a support queue of earlier projections, so that positives span more than one
image's augmentations.

A method plug-in: this file and its package's entry point are all it takes. It is built from
selfsup's shared pieces: the MLPs of ``selfsup.heads.moco`` and ``selfsup.losses.InfoNCELoss``.
Departure from the paper: the loss is selfsup's NT-Xent over the 2N projections (the paper's is the
N x N cross-entropy between neighbours and predictions); the point here is the plug-in, not the
last point of accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment import ViewConfig
from selfsup.contract import as_config
from selfsup.heads.moco import build_mlp
from selfsup.losses import InfoNCELoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig

# SimCLR's view (crop, flip, colour jitter, grayscale, blur), the same for both
VIEW = ViewConfig()


class NNCLR(PretrainModule):
    """NNCLR pretraining of a ViT.

    Args:
        encoder: the encoder (see ``PretrainModule`` for it and the shared arguments).
        projection_hidden_dim, projection_dim: the 3-layer projector (2048 → 256 in the paper).
        prediction_hidden_dim: the 2-layer predictor's hidden width (4096).
        queue_size: projections kept in the support queue (98,304 in the paper).
        temperature: the contrastive temperature (0.1).
        view: both views' augmentation.
        optim: optimiser and schedule.
    """

    method = "nnclr"
    summary = "contrastive: the nearest neighbour in a support queue is the positive"
    pooling = "token"

    queue: torch.Tensor
    queue_ptr: torch.Tensor

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 4096,
        queue_size: int = 98304,
        temperature: float = 0.1,
        view: ViewConfig = VIEW,
        optim: OptimConfig = OptimConfig(base_lr=5e-4, weight_decay=0.1, warmup_epochs=10),
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        width = self.encoder.num_features
        self.projector = build_mlp(3, width, projection_hidden_dim, projection_dim, last_bn=True)
        self.predictor = build_mlp(2, projection_dim, prediction_hidden_dim, projection_dim, last_bn=False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projection_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.criterion = InfoNCELoss(temperature)
        self.set_views([as_config(ViewConfig, view)] * 2)

    @torch.no_grad()
    def nearest_neighbours(self, z: torch.Tensor) -> torch.Tensor:
        """The queue's entry closest (in cosine) to each row of ``z``."""
        return self.queue[(F.normalize(z, dim=1) @ self.queue.T).argmax(dim=1)]

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Write ``z`` over the oldest entries (on the device: no host read of the pointer)."""
        rows = (self.queue_ptr + torch.arange(len(z), device=z.device)) % len(self.queue)
        self.queue[rows] = F.normalize(z.detach(), dim=1).to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(z)) % len(self.queue))

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        (view1, view2), _ = batch
        z = self.projector(self.encoder(torch.cat([view1, view2])))
        p = self.predictor(z)
        z1, z2 = z.chunk(2)
        p1, p2 = p.chunk(2)
        nn1, nn2 = self.nearest_neighbours(z1), self.nearest_neighbours(z2)
        loss = self.guard(0.5 * (self.criterion(nn1, p2) + self.criterion(nn2, p1)))
        self.enqueue(z1)
        self.log_step(loss, len(view1))
        return {"loss": loss}
