"""MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers"): a base encoder with a projector and a predictor, a momentum encoder with a projector
(an EMA of the base ones), and a symmetric contrastive loss of each view's queries against the other
view's keys, gathered from every process.

Followed: facebookresearch/moco-v3 ``moco/builder.py`` (``MoCo``, ``MoCo_ViT``), ``main_moco.py``
(the momentum schedule ``adjust_moco_momentum``, the recipe) and ``moco/loader.py`` with
``main_moco.py``'s augmentations (BYOL's asymmetric blur and solarize). The loss and MLPs are
``selfsup.losses.MoCoV3Loss`` and ``selfsup.heads.moco``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup.augment import ViewConfig
from selfsup.contract import as_config
from selfsup.encoders import fix_sincos_pos_embed
from selfsup.heads.moco import moco_predictor, moco_projector
from selfsup.losses.moco import MoCoV3Loss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig

# main_moco.py's two views (BYOL's): blur 1.0 / 0.1, solarize 0 / 0.2, jitter (0.4, 0.4, 0.2, 0.1)
VIEW1 = ViewConfig(crop_scale=(0.08, 1.0), blur_prob=1.0, solarize_prob=0.0)
VIEW2 = ViewConfig(crop_scale=(0.08, 1.0), blur_prob=0.1, solarize_prob=0.2)


class MoCoV3(PretrainModule):
    """MoCo v3 pretraining of a ViT.

    Args:
        encoder: the base encoder (see ``PretrainModule`` for it and the shared arguments).
        projection_hidden_dim, projection_dim: the 3-layer projector (4096 → 256 in the paper).
        prediction_hidden_dim: the 2-layer predictor's hidden width (4096).
        temperature: of the contrastive loss (0.2 for ViTs); the loss is scaled by ``2 * temperature``
            as in the reference.
        momentum: EMA momentum at the first step (0.99), following a cosine to 1 at the last.
        freeze_patch_embed: keep the random patch projection fixed (the paper's stability trick for
            ViTs, ``--stop-grad-conv1``).
        fixed_pos_embed: a fixed 2-D sine-cosine position embedding, as the reference's ViTs
            (``build_2d_sincos_position_embedding``), instead of timm's learned one. selfsup's table
            is MAE's (``selfsup.encoders.sincos_2d``): the same frequencies, with the two axes' halves
            in the other order, which is the same thing for a network trained from scratch.
        gather_distributed: contrast with the keys of every process.
        sync_batchnorm: SyncBatchNorm in the MLPs under DDP on GPUs (as the reference).
        view1, view2: the two views' augmentation (the reference's defaults; blur below 64 px is
            turned off: it wipes out small images).
        optim: AdamW, base lr 1.5e-4 per 256 images, weight decay 0.1, 40 warm-up epochs (ViT-S/B).
    """

    method = "mocov3"
    summary = "contrastive with a momentum encoder and a predictor"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 4096,
        temperature: float = 0.2,
        momentum: float = 0.99,
        freeze_patch_embed: bool = True,
        fixed_pos_embed: bool = False,
        gather_distributed: bool = True,
        sync_batchnorm: bool = True,
        view1: ViewConfig = VIEW1,
        view2: ViewConfig = VIEW2,
        optim: OptimConfig = OptimConfig(base_lr=1.5e-4, weight_decay=0.1, warmup_epochs=40),
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        if freeze_patch_embed:
            self.encoder.patch_embed.requires_grad_(False)
        if fixed_pos_embed:
            fix_sincos_pos_embed(self.encoder)
        dim = self.encoder.num_features
        self.projector = moco_projector(dim, projection_hidden_dim, projection_dim)
        self.predictor = moco_predictor(projection_dim, prediction_hidden_dim, projection_dim)
        self.add_momentum_teacher("encoder", "momentum_encoder", momentum)
        self.add_momentum_teacher("projector", "momentum_projector", momentum)
        self.criterion = MoCoV3Loss(temperature, gather_distributed)
        self.sync_batchnorm = sync_batchnorm
        views = [as_config(ViewConfig, v) for v in (view1, view2)]
        self.set_views([_no_blur_below(v, self.image_size, 64) for v in views])

    @property
    def backbone(self) -> nn.Module:
        """The momentum encoder, which the reference evaluates and releases."""
        return self.momentum_encoder

    def train(self, mode: bool = True):
        super().train(mode)
        # the momentum branch's BatchNorm layers compute batch statistics in the reference (its
        # momentum encoder runs in train mode), so they stay as the base ones; no dropout in a ViT
        return self

    def features_of(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return encoder.forward_head(encoder.forward_features(images), pre_logits=True)

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        (view1, view2), _ = batch
        both = torch.cat([view1, view2])  # one encoder pass for both views (a ViT has no batch statistics)
        f1, f2 = self.features_of(self.encoder, both).chunk(2)
        # the MLPs' BatchNorm sees each view's batch on its own, as in the reference
        q1, q2 = self.predictor(self.projector(f1)), self.predictor(self.projector(f2))
        with torch.no_grad():
            m1, m2 = self.features_of(self.momentum_encoder, both).chunk(2)
            k1, k2 = self.momentum_projector(m1), self.momentum_projector(m2)
        loss = self.guard(self.criterion(q1, q2, k1, k2))
        self.log_step(
            loss,
            len(view1),
            negatives=self.criterion.negatives_per_sample(len(view1)),
            momentum=self.teacher_momentum(self.global_step),
        )
        return {"loss": loss}


def _no_blur_below(view: ViewConfig, image_size: int, min_size: int) -> ViewConfig:
    import dataclasses

    size = view.size or image_size
    return view if size >= min_size else dataclasses.replace(view, blur_prob=0.0)
