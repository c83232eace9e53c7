"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning"): an online encoder with a projector and a predictor regresses, for each of two views,
the other view's projection by a target encoder and projector, an exponential moving average of the
online ones. No negatives: the predictor and the slowly moving target keep it from collapsing.

Followed: deepmind/deepmind-research ``byol/byol_experiment.py`` (``_forward``, ``_loss_fn``, the
target update), ``byol/utils/networks.py`` (``MLP``), ``byol/utils/schedules.py`` (``target_ema``:
``1 - (1 - base) (cos(pi k / K) + 1) / 2``, the cosine of :meth:`PretrainModule.teacher_momentum`),
``byol/utils/augmentations.py`` (the two asymmetric views) and ``byol/configs/byol.py`` (the
300-epoch preset: LARS at base lr 0.3 per 256 images, weight decay 1e-6, 10 warm-up epochs, target
momentum 0.99). The loss is :class:`selfsup.losses.NegativeCosineLoss`.

Departures: the MLPs' hidden linear layer has no bias (the BatchNorm after it cancels one exactly;
``selfsup.heads.build_mlp``); the encoder is a ViT whose class token is the representation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from selfsup.augment import ViewConfig
from selfsup.contract import as_config
from selfsup.heads import build_mlp
from selfsup.losses.negative_cosine import NegativeCosineLoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig

# byol/utils/augmentations.py: crop 0.08-1, flip, jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale
# p=0.2 on both; blur p=1.0 / 0.1 and solarize p=0.0 / 0.2 (VICReg and Barlow Twins use the same)
VIEW1 = ViewConfig(crop_scale=(0.08, 1.0), blur_prob=1.0, solarize_prob=0.0)
VIEW2 = ViewConfig(crop_scale=(0.08, 1.0), blur_prob=0.1, solarize_prob=0.2)


def two_views(view1: Any, view2: Any, image_size: int, blur_min_size: int = 64) -> list[ViewConfig]:
    """The two views as :class:`ViewConfig`\\ s, with blur off below ``blur_min_size`` pixels
    (a blur of sigma 0.1-2 px wipes out 16- and 32-px images)."""
    views = [as_config(ViewConfig, v) for v in (view1, view2)]
    return [
        v if (v.size or image_size) >= blur_min_size else dataclasses.replace(v, blur_prob=0.0) for v in views
    ]


class BYOL(PretrainModule):
    """BYOL pretraining of a ViT. The backbone (export, probing) is the online encoder, the one
    the paper keeps.

    Args:
        encoder: the online encoder (see ``PretrainModule`` for it and the shared arguments).
        projection_hidden_dim, projection_dim: the projector, Linear → BatchNorm → ReLU → Linear
            (4096 → 256 in the paper), on the online and the target branch.
        prediction_hidden_dim: the predictor's hidden width (4096; output ``projection_dim``), on the
            online branch only.
        momentum: the target's EMA momentum at the first step (0.99 for 300 epochs, 0.996 for
            1000 in the reference), following a cosine to 1 at the last.
        sync_batchnorm: SyncBatchNorm in the MLPs under DDP on GPUs (the reference accumulates the
            BatchNorm statistics across devices).
        view1, view2: the two views' augmentation (the reference's; blur below 64 px is turned
            off).
        optim: LARS at base lr 0.3 per 256 images, weight decay 1e-6 (biases and norms excluded from
            both), 10 warm-up epochs, cosine to 0 (the reference's 300-epoch preset).
    """

    method = "byol"
    summary = "regression of a momentum target's projection, no negatives"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 4096,
        momentum: float = 0.99,
        sync_batchnorm: bool = True,
        view1: ViewConfig = VIEW1,
        view2: ViewConfig = VIEW2,
        optim: OptimConfig = OptimConfig(name="lars", base_lr=0.3, weight_decay=1e-6, warmup_epochs=10),
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        dim = self.encoder.num_features
        self.projector = build_mlp(2, dim, projection_hidden_dim, projection_dim, last_bn=False)
        self.predictor = build_mlp(2, projection_dim, prediction_hidden_dim, projection_dim, last_bn=False)
        self.add_momentum_teacher("encoder", "target_encoder", momentum)
        self.add_momentum_teacher("projector", "target_projector", momentum)
        self.criterion = NegativeCosineLoss()
        self.sync_batchnorm = sync_batchnorm
        self.set_views(two_views(view1, view2, self.image_size))

    def features_of(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return encoder.forward_head(encoder.forward_features(images), pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images → the online branch's projections ``[B, projection_dim]``."""
        return self.projector(self.features(images))

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        (view1, view2), _ = batch
        both = torch.cat([view1, view2])  # one encoder pass for both views (a ViT has no batch statistics)
        f1, f2 = self.features_of(self.encoder, both).chunk(2)
        # the MLPs' BatchNorm sees each view's batch on its own, as the reference's per-view forward
        z1, z2 = self.projector(f1), self.projector(f2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():  # the target runs in train mode (batch statistics), as the reference's
            t1, t2 = self.features_of(self.target_encoder, both).chunk(2)
            t1, t2 = self.target_projector(t1), self.target_projector(t2)
        loss = self.guard(self.criterion(p1, p2, t1, t2))
        self.log_step(loss, len(view1), momentum=self.teacher_momentum(self.global_step))
        # the first view's features and projections, detached: an online probe and the collapse check
        return {"loss": loss, "features": f1.detach(), "embeddings": z1.detach()}
