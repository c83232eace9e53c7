"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny 2021, "Barlow Twins: Self-Supervised Learning
via Redundancy Reduction"): one encoder and a projector on two views; the cross-correlation matrix
of the two views' batch-normalised embeddings is pushed to the identity. No momentum branch, no
negatives.

Followed: facebookresearch/barlowtwins ``main.py`` (``BarlowTwins``, the projector ``8192-8192-8192``
with bias-free linear layers, ``adjust_learning_rate``: LARS, lr 0.2 per 256 images for the weights,
weight decay 1e-6, 10 warm-up epochs, cosine to 1/1000 of the peak; biases and norms excluded from
the decay and the LARS adaptation; ``Transform``: BYOL's two views). The loss is
:class:`selfsup.losses.BarlowTwinsLoss` (see it for how the global batch is handled).

Departures: the biases and norms learn at the weights' rate (the reference gives them 0.0048 per
256 images, 1/42 of it; one rate per run here); the encoder is a ViT whose class token is the
representation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup.augment import ViewConfig
from selfsup.heads import build_mlp
from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.methods.byol import VIEW1, VIEW2, two_views
from selfsup.optim import OptimConfig


class BarlowTwins(PretrainModule):
    """Barlow Twins pretraining of a ViT.

    Args:
        encoder: the encoder (see ``PretrainModule`` for it and the shared arguments).
        projection_hidden_dim, projection_dim, projection_layers: the projector, (Linear →
            BatchNorm → ReLU) x (layers - 1) → Linear, no biases (``8192-8192-8192``: 3 layers).
        lambda_: the weight of the off-diagonal term (0.0051, the reference's ``--lambd``).
        gather_distributed: normalise and correlate over the global batch (the reference's).
        sync_batchnorm: SyncBatchNorm in the projector under DDP on GPUs (as the reference).
        view1, view2: the two views' augmentation (BYOL's, as the reference; blur below 64 px is
            turned off).
        optim: LARS at base lr 0.2 per 256 images, weight decay 1e-6, 10 warm-up epochs, cosine to
            1e-3 of the peak (the reference's 1000-epoch run at batch 2048).
    """

    method = "barlow_twins"
    summary = "cross-correlation of two views' embeddings pushed to the identity"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        projection_hidden_dim: int = 8192,
        projection_dim: int = 8192,
        projection_layers: int = 3,
        lambda_: float = 0.0051,
        gather_distributed: bool = True,
        sync_batchnorm: bool = True,
        view1: ViewConfig = VIEW1,
        view2: ViewConfig = VIEW2,
        optim: OptimConfig = OptimConfig(
            name="lars", base_lr=0.2, weight_decay=1e-6, warmup_epochs=10, min_lr_ratio=1e-3
        ),
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        self.projector = build_mlp(
            projection_layers, self.encoder.num_features, projection_hidden_dim, projection_dim, last_bn=False
        )
        self.criterion = BarlowTwinsLoss(lambda_, gather_distributed=gather_distributed)
        self.sync_batchnorm = sync_batchnorm
        self.set_views(two_views(view1, view2, self.image_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images → projections ``[B, projection_dim]``."""
        return self.projector(self.features(images))

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        (view1, view2), _ = batch
        f1, f2 = self.features(torch.cat([view1, view2])).chunk(2)  # one encoder pass for both views
        # the projector's BatchNorm sees each view's batch on its own, as the reference's
        z1, z2 = self.projector(f1), self.projector(f2)
        on_diagonal, off_diagonal = self.criterion.terms(z1, z2)
        loss = self.guard(on_diagonal + self.criterion.lambda_ * off_diagonal)
        self.log_step(loss, len(view1), on_diagonal=on_diagonal, off_diagonal=off_diagonal)
        return {"loss": loss, "features": f1.detach(), "embeddings": z1.detach()}
