"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments"): online clustering. Every crop's normalised projection is scored against trainable
prototypes; the codes of each global crop (Sinkhorn-Knopp equipartition over the global batch, and a
queue of earlier embeddings when the batch is small) are predicted from every other crop
("swapped prediction"), with multi-crop.

Followed: facebookresearch/swav ``main_swav.py`` (``train``: prototype normalisation before every
step, the queue, the frozen prototypes of the first iterations; the recipe of
``scripts/swav_800ep_pretrain.sh``: 2 x 224 + 6 x 96 crops of scale 0.14-1 and 0.05-0.14, 3000
prototypes, feature width 128, temperature 0.1, epsilon 0.05, LARS at 4.8 for a batch of 4096 (0.3
per 256 images), final lr 1/1000 of it, weight decay 1e-6, 10 warm-up epochs, prototypes frozen for
313 iterations, one epoch at that batch), ``src/resnet50.py`` (the projection head, 2048 hidden with
BatchNorm, and the prototypes) and ``src/multicropdataset.py`` (flip, colour distortion of strength
1, Gaussian blur with p = 0.5 on every crop). The loss is :class:`selfsup.losses.SwAVLoss`, the codes
:func:`selfsup.losses.sinkhorn.sinkhorn_knopp`, the prototypes :class:`selfsup.heads.SwAVPrototypes`.

Departures: the warm-up starts at 0 (the reference's at 0.3); prototypes are frozen for whole epochs
(``freeze_prototypes_epochs``); ``queue_length`` counts this process's rows (the reference's is the
global length, divided among the processes); the queue is a ring (its order does not matter to
Sinkhorn-Knopp) and is used once full, which is counted on the host, not read from the device; it
is not saved in checkpoints (the reference saves one file per process), so after a resume it fills
again before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.contract import as_config
from selfsup.heads import ProjectionHead
from selfsup.heads.swav import SwAVPrototypes
from selfsup.losses.swav import SwAVLoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig


@dataclass(frozen=True)
class SwAVViews:
    """SwAV's multi-crop (``MultiCropDataset``): 2 global crops and ``local_crops`` small ones, each
    with flip, colour jitter (0.8, 0.8, 0.8, 0.2) with p = 0.8, grayscale with p = 0.2 and Gaussian
    blur (sigma 0.1-2) with p = 0.5.

    Attributes:
        global_scale, local_scale: crop area ranges (0.14-1 and 0.05-0.14 in the paper).
        local_crops: number of small crops (6; 0 gives the two-crop variant).
        local_size: side of the small crops; None scales the paper's 96 / 224 to the image size,
            rounded to a whole number of patches.
        blur_min_size: no blur on crops smaller than this (a blur of 0.1-2 px wipes out tiny images).
    """

    global_scale: tuple[float, float] = (0.14, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.14)
    local_crops: int = 6
    local_size: int | None = None
    hflip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_min_size: int = 64

    def __post_init__(self) -> None:
        if self.local_crops < 0:
            raise ValueError(f"local_crops must be >= 0, got {self.local_crops}.")

    def views(self, image_size: int, patch_size: int) -> list:
        from selfsup.augment import ViewConfig
        from selfsup.augment.views import local_crop_size

        local_size = local_crop_size(image_size, patch_size, self.local_size)
        common = {k: getattr(self, k) for k in ("hflip_prob", "jitter_prob", "brightness", "contrast",
                                                 "saturation", "hue", "grayscale_prob")}  # fmt: skip

        def view(size: int, scale: tuple[float, float]) -> ViewConfig:
            blur = self.blur_prob if size >= self.blur_min_size else 0.0
            return ViewConfig(size=size, crop_scale=scale, blur_prob=blur, **common)

        return [view(image_size, self.global_scale)] * 2 + [
            view(local_size, self.local_scale)
        ] * self.local_crops


class SwAV(PretrainModule):
    """SwAV pretraining of a ViT.

    Args:
        encoder: the encoder (see ``PretrainModule`` for it and the shared arguments); built with
            ``dynamic_img_size`` where there are local crops, so one network takes every crop size.
        projection_hidden_dim, projection_dim: the projection head, Linear → BatchNorm → ReLU →
            Linear (2048 → 128).
        num_prototypes: ``K`` (3000 for ImageNet).
        temperature: of the swapped prediction's softmax (0.1).
        epsilon, sinkhorn_iterations: of the Sinkhorn-Knopp codes (0.05, 3).
        queue_length: rows of earlier embeddings per assigned crop that join the codes' computation,
            on this process (0: none; the reference uses 3840 in all for batches of 256).
        queue_start_epoch: the epoch from which the queue fills (15); it is used once full.
        freeze_prototypes_epochs: epochs during which the prototypes get no update (1).
        sync_batchnorm: SyncBatchNorm in the projection head under DDP on GPUs (as the reference).
        augment: the multi-crop views.
        optim: LARS at base lr 0.3 per 256 images, weight decay 1e-6, 10 warm-up epochs, cosine to
            1e-3 of the peak (``swav_800ep_pretrain.sh``).
    """

    method = "swav"
    summary = "online clustering: swapped prediction of Sinkhorn-Knopp codes, multi-crop"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        queue_length: int = 0,
        queue_start_epoch: int = 15,
        freeze_prototypes_epochs: int = 1,
        sync_batchnorm: bool = True,
        augment: SwAVViews = SwAVViews(),
        optim: OptimConfig = OptimConfig(
            name="lars", base_lr=0.3, weight_decay=1e-6, warmup_epochs=10, min_lr_ratio=1e-3
        ),
        **kwargs: Any,
    ) -> None:
        views = as_config(SwAVViews, augment)
        if views.local_crops > 0 and isinstance(encoder, str):
            kwargs["encoder_kwargs"] = {**(kwargs.get("encoder_kwargs") or {}), "dynamic_img_size": True}
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        if views.local_crops > 0 and not getattr(self.encoder, "dynamic_img_size", False):
            raise ValueError(
                "SwAV's local crops need an encoder built with dynamic_img_size=True (timm): pass the encoder "
                "by name, or build the injected one with dynamic_img_size=True."
            )
        if queue_length < 0 or queue_start_epoch < 0 or freeze_prototypes_epochs < 0:
            raise ValueError(
                "queue_length, queue_start_epoch and freeze_prototypes_epochs must be >= 0, got "
                f"{queue_length}, {queue_start_epoch}, {freeze_prototypes_epochs}."
            )
        self.projector = ProjectionHead(self.encoder.num_features, projection_hidden_dim, projection_dim, 2)
        self.prototypes = SwAVPrototypes(projection_dim, num_prototypes)
        self.criterion = SwAVLoss(temperature, epsilon, sinkhorn_iterations)
        self.queue_length = queue_length
        self.queue_start_epoch = queue_start_epoch
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.sync_batchnorm = sync_batchnorm
        self.assigned = 2  # the two global crops (the reference's crops_for_assign)
        # the queue: earlier normalised embeddings of each assigned crop, this process's own (not a
        # buffer: DDP would broadcast rank 0's to every process), and the host's count of its rows
        self.queue: torch.Tensor | None = None
        self._queue_rows = 0
        self.augment_config = views
        self.set_views(views.views(self.image_size, int(self.encoder.patch_embed.patch_size[0])))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images → L2-normalised projections ``[B, projection_dim]``."""
        return F.normalize(self.projector(self.features(images)), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images → the normalised projections (the embeddings that are clustered)."""
        return self.embed(images)

    def multi_crop_embeddings(self, views: list[torch.Tensor]) -> torch.Tensor:
        """``[crops, B, projection_dim]``: one encoder pass per crop size; the projection head sees
        every crop's features at once (its BatchNorm's statistics span all crops), as the reference."""
        features: list[torch.Tensor | None] = [None] * len(views)
        for size in dict.fromkeys(v.shape[-1] for v in views):
            index = [i for i, v in enumerate(views) if v.shape[-1] == size]
            out = self.features(torch.cat([views[i] for i in index])).chunk(len(index))
            for i, chunk in zip(index, out, strict=True):
                features[i] = chunk
        z = F.normalize(self.projector(torch.cat(features)), dim=1)  # type: ignore[arg-type]
        return z.view(len(views), len(views[0]), -1)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self.prototypes.normalize_()

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        views, _ = batch
        embeddings = self.multi_crop_embeddings(list(views))
        scores = list(self.prototypes(embeddings).unbind(0))
        queue_scores = self.queue_scores() if self.queue_in_use() else None
        loss = self.guard(self.criterion(scores, self.assigned, queue_scores))
        if self.queue_length and self.current_epoch >= self.queue_start_epoch:
            self.enqueue(embeddings[: self.assigned].detach())
        self.log_step(loss, len(views[0]), queue_in_use=float(queue_scores is not None))
        return {"loss": loss, "embeddings": embeddings[0].detach()}

    # --- the queue ---------------------------------------------------------------------------------

    def queue_in_use(self) -> bool:
        return self.queue is not None and self._queue_rows >= self.queue_length

    def queue_scores(self) -> list[torch.Tensor]:
        return list(self.prototypes(self.queue.to(self.prototypes.layer.weight.dtype)).unbind(0))

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor) -> None:
        """Write ``[assigned, B, D]`` embeddings over the oldest rows of the ring."""
        batch = embeddings.shape[1]
        if self.queue_length % batch:
            raise ValueError(
                f"queue_length {self.queue_length} is not a multiple of the batch of {batch} per process: "
                f"set model.init_args.queue_length to a multiple of {batch}."
            )
        if self.queue is None:
            self.queue = embeddings.new_zeros((embeddings.shape[0], self.queue_length, embeddings.shape[2]))
        start = self._queue_rows % self.queue_length
        self.queue[:, start : start + batch] = embeddings
        self._queue_rows += batch

    # --- the prototypes' first epochs ----------------------------------------------------------------

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.current_epoch < self.freeze_prototypes_epochs:
            for p in self.prototypes.parameters():
                p.grad = None
        super().on_before_optimizer_step(optimizer)
