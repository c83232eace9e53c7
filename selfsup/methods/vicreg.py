"""VICReg (Bardes, Ponce, LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning"): one encoder and an expander MLP on two views; the loss pulls the two
embeddings together (invariance) while keeping every dimension's spread across the batch
(variance) and decorrelating the dimensions (covariance). No momentum branch, no negatives.

Followed: facebookresearch/vicreg ``main_vicreg.py`` (``VICReg``, ``Projector``,
``adjust_learning_rate``: LARS, base lr 0.2 per 256 images for 1000 epochs at batch 2048, weight
decay 1e-6, 10 warm-up epochs, cosine to 1/1000 of the peak; biases and norms excluded from the
decay and the LARS adaptation) and ``augmentations.py`` (BYOL's two views). The loss is
:class:`selfsup.losses.VICRegLoss`.

Departure: the expander's hidden layers have no bias (the BatchNorm after each cancels one exactly;
``selfsup.heads.build_mlp``); the encoder is a ViT whose class token is the representation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup.augment import ViewConfig
from selfsup.heads import build_mlp
from selfsup.losses.vicreg import VICRegLoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.methods.byol import VIEW1, VIEW2, two_views
from selfsup.optim import OptimConfig


class VICReg(PretrainModule):
    """VICReg pretraining of a ViT.

    Args:
        encoder: the encoder (see ``PretrainModule`` for it and the shared arguments).
        expander_hidden_dim, expander_dim, expander_layers: the expander, (Linear → BatchNorm →
            ReLU) x (layers - 1) → Linear (the reference's ``8192-8192-8192``: 3 layers).
        invariance_weight, variance_weight, covariance_weight: the loss's ``lambda``, ``mu``,
            ``nu`` (25, 25, 1).
        gather_distributed: the variance and covariance over the global batch (the reference's).
        sync_batchnorm: SyncBatchNorm in the expander under DDP on GPUs (as the reference).
        view1, view2: the two views' augmentation (BYOL's, as the reference; blur below 64 px is
            turned off).
        optim: LARS at base lr 0.2 per 256 images, weight decay 1e-6, 10 warm-up epochs, cosine to
            1e-3 of the peak (the reference's 1000-epoch run).
    """

    method = "vicreg"
    summary = "variance-invariance-covariance regularisation of two views' embeddings"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        expander_hidden_dim: int = 8192,
        expander_dim: int = 8192,
        expander_layers: int = 3,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
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
        self.expander = build_mlp(
            expander_layers, self.encoder.num_features, expander_hidden_dim, expander_dim, last_bn=False
        )
        self.criterion = VICRegLoss(invariance_weight, variance_weight, covariance_weight,
                                    gather_distributed=gather_distributed)  # fmt: skip
        self.sync_batchnorm = sync_batchnorm
        self.set_views(two_views(view1, view2, self.image_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images → embeddings ``[B, expander_dim]``."""
        return self.expander(self.features(images))

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        (view1, view2), _ = batch
        features = self.features(torch.cat([view1, view2]))  # one encoder pass for both views
        f1, f2 = features.chunk(2)
        # the expander's BatchNorm sees each view's batch on its own, as the reference's
        z1, z2 = self.expander(f1), self.expander(f2)
        invariance, variance, covariance = self.criterion.terms(z1, z2)
        weights = self.criterion.weights
        loss = self.guard(weights[0] * invariance + weights[1] * variance + weights[2] * covariance)
        self.log_step(loss, len(view1), invariance=invariance, variance=variance, covariance=covariance)
        return {"loss": loss, "features": f1.detach(), "embeddings": z1.detach()}
