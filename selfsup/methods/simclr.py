"""SimCLR (Chen et al. 2020): two augmented views, a projection MLP, and the InfoNCE loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup.augment import SimCLRViewConfig
from selfsup.contract import as_config
from selfsup.heads import ProjectionHead
from selfsup.losses import InfoNCELoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig


class SimCLR(PretrainModule):
    """Contrastive pretraining of a ViT with InfoNCE over the (global) batch.

    Both views go through the encoder in one forward pass; the pooled feature (class token) goes
    through the projection MLP and the loss compares the two views' projections.

    Args:
        encoder: the encoder (see ``PretrainModule`` for it and the other shared arguments:
            ``img_size``, ``patch_size``, ``encoder_kwargs``, ``skip_nonfinite_steps``, ``compile``).
        projection_hidden_dim, projection_dim, projection_layers: the projection MLP
            (SimCLR v2: 3 layers; v1: 2 layers of 2048 → 128).
        projection_batch_norm: BatchNorm between the projection's layers (SimCLR v2's head).
        temperature: InfoNCE temperature.
        gather_distributed: contrast with the negatives of all processes (global batch). Turning it
            off under DDP shrinks the negatives to the local batch and triggers a warning.
        sync_batchnorm: synchronise the projection head's BatchNorm across processes under DDP (on
            GPUs: PyTorch's SyncBatchNorm does not run on CPU processes, which keep per-process
            statistics, with a warning).
        augment: view parameters, the same for both views (SimCLR paper defaults; the CIFAR config
            uses its CIFAR values).
        optim: optimiser and schedule. The learning rate is ``optim.base_lr * global_batch / 256``
            with ``global_batch = data.batch_size * processes * accumulate_grad_batches``; the default
            is AdamW (the usual choice for ViTs, e.g. MoCo v3) with weight decay 0.1, LARS is available
            with ``optim.name: lars``.
    """

    method = "simclr"
    summary = "contrastive: InfoNCE between two views, global negatives"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        projection_layers: int = 2,
        projection_batch_norm: bool = True,
        temperature: float = 0.1,
        gather_distributed: bool = True,
        sync_batchnorm: bool = True,
        augment: SimCLRViewConfig = SimCLRViewConfig(),
        optim: OptimConfig = OptimConfig(base_lr=5e-4, weight_decay=0.1, warmup_epochs=10),
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        self.projection = ProjectionHead(
            self.encoder.num_features,
            projection_hidden_dim,
            projection_dim,
            projection_layers,
            projection_batch_norm,
        )
        self.criterion = InfoNCELoss(temperature, gather_distributed)
        self.sync_batchnorm = sync_batchnorm
        self.augment_config = as_config(SimCLRViewConfig, augment)
        view = self.augment_config.to_view(self.image_size)
        self.set_views([view, view])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images → projections ``[B, projection_dim]``."""
        return self.projection(self.features(images))

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1 and not self.criterion.gather_distributed:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"SimCLR runs on {self.trainer.world_size} processes with gather_distributed=False: each sample "
                f"is contrasted only with its own process's batch ({self.criterion.negatives_per_sample(1)}"
                " negatives per image at batch 1 per process; see train/negatives). Set "
                "model.init_args.gather_distributed: true to use the global batch.",
                category=UserWarning,
            )

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        (view1, view2), _ = batch
        features = self.features(torch.cat([view1, view2]))
        z1, z2 = self.projection(features).chunk(2)
        loss = self.guard(self.criterion(z1, z2))
        self.log_step(loss, len(view1), negatives=self.criterion.negatives_per_sample(len(view1)))
        # the first view's features, detached, for an online probe (free: already computed)
        return {"loss": loss, "features": features[: len(view1)].detach()}
