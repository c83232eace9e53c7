"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): an online encoder, projector and predictor
regress a momentum target's projection of the other view; no negatives.

A method plug-in: this file and its package's entry point are all it takes. It is built from
selfsup's shared pieces: the MLPs of ``selfsup.heads.moco``, the cosine regression of
``selfsup.losses.FeatureDistillationLoss`` and the momentum teachers of ``PretrainModule``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup.augment import ViewConfig
from selfsup.contract import as_config
from selfsup.heads.moco import build_mlp
from selfsup.losses import FeatureDistillationLoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig

# the paper's two views: blur 1.0 / 0.1, solarize 0 / 0.2
VIEW1 = ViewConfig(crop_scale=(0.08, 1.0), blur_prob=1.0, solarize_prob=0.0)
VIEW2 = ViewConfig(crop_scale=(0.08, 1.0), blur_prob=0.1, solarize_prob=0.2)


class BYOL(PretrainModule):
    """BYOL pretraining of a ViT.

    Args:
        encoder: the online encoder (see ``PretrainModule`` for it and the shared arguments).
        projection_hidden_dim, projection_dim: the 2-layer projector (4096 → 256 in the paper).
        prediction_hidden_dim: the 2-layer predictor's hidden width (4096).
        momentum: the target's EMA momentum at the first step (0.996), following a cosine to 1.
        view1, view2: the two views' augmentation.
        optim: optimiser and schedule.
    """

    method = "byol"
    summary = "bootstrap: regress a momentum target's projection of the other view"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 4096,
        momentum: float = 0.996,
        view1: ViewConfig = VIEW1,
        view2: ViewConfig = VIEW2,
        optim: OptimConfig = OptimConfig(base_lr=1.5e-4, weight_decay=0.1, warmup_epochs=10),
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        width = self.encoder.num_features
        self.projector = build_mlp(2, width, projection_hidden_dim, projection_dim, last_bn=False)
        self.predictor = build_mlp(2, projection_dim, prediction_hidden_dim, projection_dim, last_bn=False)
        self.add_momentum_teacher("encoder", "target_encoder", momentum)
        self.add_momentum_teacher("projector", "target_projector", momentum)
        self.criterion = FeatureDistillationLoss("cosine")  # 1 - cos: half the paper's 2 - 2 cos
        self.set_views([as_config(ViewConfig, v) for v in (view1, view2)])

    @property
    def backbone(self) -> nn.Module:
        """The target encoder, which the paper evaluates."""
        return self.target_encoder

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        (view1, view2), _ = batch
        both = torch.cat([view1, view2])
        online = self.predictor(self.projector(self.encoder(both)))
        with torch.no_grad():  # the target of each view is the other view's projection
            target = self.target_projector(self.target_encoder(torch.cat([view2, view1])))
        loss = self.guard(2 * self.criterion(online, target), [view1, view2])
        self.log_step(loss, len(view1), momentum=self.teacher_momentum(self.global_step))
        return {"loss": loss}
