"""What every pretraining method shares, and the declarations a method makes.

A method is one file: a subclass of :class:`PretrainModule` that

- declares its **name** and a one-line **summary** as string literals in the class body
  (``method = "byol"``, ``summary = "..."``): a file in ``selfsup/methods/``, or a class that a
  package names in its ``selfsup.methods`` entry points, is then found by ``selfsup --help``,
  ``selfsup.<ClassName>`` and configs (see :mod:`selfsup.methods`);
- builds its heads and loss in ``__init__`` and declares its **views** with :meth:`set_views`
  (one :class:`~selfsup.augment.ViewConfig` per view: any number, any sizes);
- declares its **backbone** (the module that export, probing, the kNN monitor and the online probe
  use) by overriding :attr:`backbone` (default: ``self.encoder``; a momentum teacher's encoder for
  EMA methods), and its **default pooling** with the class attribute ``pooling``;
- registers **momentum teachers** with :meth:`add_momentum_teacher`: an EMA of a student module,
  updated after every optimiser step with a momentum that follows a cosine over the total number of
  optimiser steps (:attr:`total_steps`);
- implements ``training_step`` on ``(views, labels)`` batches, calling :meth:`guard` on its loss and
  :meth:`log_step`.

Everything else (encoder construction, augmentation in ``on_after_batch_transfer``, the optimiser
and its schedules, the non-finite guard, checkpoint metadata) is here or in ``selfsup.module``;
continual pretraining (``init_from``, ``continual_weight``) is in :mod:`selfsup.methods.continual`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from selfsup import distributed
from selfsup.contract import CheckpointMeta, ModelSpec, as_config
from selfsup.data.decode import batch_images
from selfsup.encoders import (
    Pool,
    check_patch_grid,
    create_encoder,
    data_config,
    default_pool,
    pooled_features,
)
from selfsup.methods.continual import ContinualDistillation
from selfsup.module import SelfSupModule
from selfsup.optim import OptimConfig, cosine

DEFAULT_ENCODER = "vit_tiny_patch16_224"


class PretrainModule(ContinualDistillation, SelfSupModule):
    """Base class of the self-supervised methods.

    Args:
        encoder: a timm ViT name (built with :func:`selfsup.encoders.create_encoder`) or an encoder
            instance made by it.
        img_size: input side in pixels (the CLI links it to ``data.image_size``). With an injected
            encoder, must be None or equal to the encoder's.
        patch_size: patch side for a named encoder (None: the name's default).
        encoder_kwargs: further timm ``VisionTransformer`` arguments for a named encoder
            (``depth``, ``embed_dim``, ``num_heads``, ``drop_path_rate``...).
        optim: optimiser and schedules (see :class:`selfsup.optim.OptimConfig`); each method sets
            its paper's defaults.
        skip_nonfinite_steps: steps with a NaN / infinite loss or gradient that may be skipped before
            training stops (0: stop at the first, naming the step and the last good checkpoint; see
            ``selfsup.guard``).
        compile: compile the encoder and heads with ``torch.compile`` (first steps are slower while
            it compiles; later steps faster on GPUs).
        init_from: continual pretraining: start the encoder from these weights (the backbone's
            only: the optimiser, the schedule and the step start afresh). Any source of
            :func:`selfsup.load.load_encoder`: a selfsup export or checkpoint, a timm ``local-dir:``
            folder, or a timm name whose weights timm holds (its cache, or ``init_from_file``). The
            architecture must match, else a ``CheckpointError`` names both.
        continual_weight: with ``init_from``, keep what the starting encoder knew (CaSSLe, Fini et
            al. 2022): a frozen copy of it is a distillation teacher, and ``continual_weight`` times
            ``2 - 2 cos(predictor(student features), teacher features)`` on the first view is added
            to the method's loss (0: off; see :mod:`selfsup.methods.continual`).
        init_from_file: with a timm name in ``init_from``, its weights file (timm's
            ``pretrained_cfg_overlay={"file": ...}``: a ``.safetensors``, or an original
            facebookresearch ``.pth``, whose keys timm converts), for machines without the hub.
        head_warmup_steps: continuing from a good backbone whose heads were not released (public
            DINOv2 weights; dinov2 issue #204): for this many steps the encoder's learning rate is 0,
            so its weights stay bitwise as loaded while the heads (and the teacher's, by EMA) learn
            to read it; then the encoder trains, its learning rate ramping up over
            ``backbone_warmup_steps`` (0: at once) within the method's schedule.
        backbone_warmup_steps: see ``head_warmup_steps``.
    """

    # the registered name and one line for ``selfsup --help`` (default: the docstring's first line),
    # string literals in the class body: the registry reads them from the source
    method: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    pooling: ClassVar[Pool] = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        img_size: int | None = None,
        patch_size: int | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        optim: OptimConfig = OptimConfig(),
        skip_nonfinite_steps: int = 0,
        compile: bool = False,
        init_from: str | None = None,
        continual_weight: float = 0.0,
        init_from_file: str | None = None,
        head_warmup_steps: int = 0,
        backbone_warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        self.set_guard(skip_nonfinite_steps)
        self.encoder: VisionTransformer = self.build_encoder(encoder, img_size, patch_size, encoder_kwargs)
        self.init_continual(init_from, continual_weight, init_from_file)
        if head_warmup_steps < 0 or backbone_warmup_steps < 0:
            raise ValueError(
                f"head_warmup_steps and backbone_warmup_steps must be >= 0, got {head_warmup_steps} and "
                f"{backbone_warmup_steps}."
            )
        self.held_prefixes, self.held_steps = ("encoder.",), head_warmup_steps
        self.held_warmup_steps = backbone_warmup_steps
        self.optim = as_config(OptimConfig, optim)
        self.compile_model = compile
        facts = data_config(self.encoder, img_size)
        self.image_size = facts["input_size"][-1]
        self.set_normalization(facts["mean"], facts["std"])
        self._teachers: list[tuple[str, str, float, float]] = []
        self.total_steps = 1
        self.view_augment: nn.Module | None = None

    @staticmethod
    def build_encoder(
        encoder: str | nn.Module,
        img_size: int | None,
        patch_size: int | None,
        encoder_kwargs: dict[str, Any] | None,
    ) -> VisionTransformer:
        if isinstance(encoder, str):
            try:
                return create_encoder(
                    encoder, img_size=img_size, patch_size=patch_size, **(encoder_kwargs or {})
                )
            except TypeError as err:
                raise ValueError(
                    f"encoder_kwargs {encoder_kwargs} do not fit timm's VisionTransformer: {err}"
                ) from None
        if not isinstance(encoder, VisionTransformer):
            raise TypeError(
                f"encoder must be a timm ViT name or a timm VisionTransformer, got {type(encoder).__name__}."
            )
        if encoder_kwargs:
            raise ValueError(
                "encoder_kwargs only apply to a named encoder; build the injected encoder with them."
            )
        check_patch_grid(encoder)
        actual = encoder.patch_embed.img_size[0]
        if img_size is not None and img_size != actual:
            raise ValueError(
                f"img_size={img_size} but the injected encoder takes {actual}-px images: build the "
                f"encoder with img_size={img_size}, or set the data's image_size to {actual}."
            )
        return encoder

    # --- declarations ------------------------------------------------------------------------------

    @property
    def backbone(self) -> VisionTransformer:
        """The network that export, probing and the monitors use (override for EMA methods)."""
        return self.encoder

    @property
    def backbone_prefix(self) -> str:
        """The backbone's prefix in the state dict (``encoder.``, ``teacher.encoder.``...)."""
        for name, module in self.named_modules():
            if module is self.backbone:
                return f"{name}."
        raise RuntimeError("the backbone is not a submodule of the method.")

    @property
    def default_pool(self) -> Pool:
        """The declared pooling, or ``avg`` when the backbone has no class token."""
        return default_pool(self.backbone, self.pooling)

    def set_views(self, views: Sequence[Any], out_dtype: torch.dtype | None = None) -> None:
        """Declare the method's views: one :class:`~selfsup.augment.ViewConfig` per view (size None:
        the encoder's image size). The batch's uint8 images become these views, normalised, in
        ``on_after_batch_transfer``."""
        from selfsup.augment import MultiViewAugment

        views = [v if v.size is not None else _with_size(v, self.image_size) for v in views]
        self.views = list(views)
        self.view_augment = MultiViewAugment(self.views, self.mean, self.std)
        self._view_dtype = out_dtype

    # --- data → augmentation (on the device, whole batches) ---------------------------------------

    def augment(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 batch → the declared views (normalised), in the dtype the step computes in."""
        if self.view_augment is None:
            raise NotImplementedError(f"{type(self).__name__} declares no views: call set_views in __init__.")
        return self.view_augment(images, out_dtype=self._view_dtype or self.compute_dtype())

    def compute_dtype(self) -> torch.dtype:
        """bf16 under ``bf16-mixed`` (views in bf16 halve the augmentation's memory traffic; the
        encoder would cast them anyway), else float32."""
        precision = str(getattr(self._trainer, "precision", "32")) if self._trainer is not None else "32"
        return torch.bfloat16 if precision.startswith("bf16") else torch.float32

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch[0], batch[1]
        images = batch_images(images, self.image_size, self.device)  # decodes where data.decode is gpu
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"batch images are {tuple(images.shape[-2:])} but the encoder takes {self.image_size}-px images: "
                "set data.image_size to the encoder's img_size."
            )
        if self._trainer is not None and self._trainer.training:
            return self.augment(images), labels
        return self.normalize(images), labels

    # --- features ----------------------------------------------------------------------------------

    def features(self, images: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        """Normalised ``[B, 3, H, W]`` images → ``[B, D]`` backbone features (no head)."""
        return pooled_features(self.backbone, images, pool or self.default_pool)

    # --- momentum teachers -------------------------------------------------------------------------

    def add_momentum_teacher(
        self, student: str, teacher: str, momentum: float, momentum_end: float = 1.0
    ) -> nn.Module:
        """Create ``self.<teacher>`` as a frozen copy of ``self.<student>`` and update it after every
        optimiser step: ``teacher ← m · teacher + (1 − m) · student`` (parameters; buffers are the
        teacher's own), with ``m`` following a cosine from ``momentum`` to ``momentum_end`` over
        :attr:`total_steps` (:meth:`teacher_momentum`)."""
        if not 0.0 <= momentum <= 1.0 or not 0.0 <= momentum_end <= 1.0:
            raise ValueError(f"teacher momentum must lie in [0, 1], got {momentum} → {momentum_end}.")
        module = copy.deepcopy(getattr(self, student))
        module.requires_grad_(False)
        setattr(self, teacher, module)
        self._teachers.append((student, teacher, float(momentum), float(momentum_end)))
        return module

    def teacher_momentum(self, step: int, index: int = 0) -> float:
        """The EMA momentum after optimiser step ``step``: ``end - (end - start) (1 + cos(pi step / T)) / 2``
        with ``T`` = :attr:`total_steps` (DINO's and MoCo v3's schedule)."""
        _, _, start, end = self._teachers[index]
        return cosine(start, end, step, self.total_steps)

    @torch.no_grad()
    def update_teachers(self, step: int) -> None:
        for index, (student, teacher, _, _) in enumerate(self._teachers):
            momentum = self.teacher_momentum(step, index)
            ema_update(getattr(self, teacher), getattr(self, student), momentum)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self._teachers:
            self.update_teachers(self.trainer.global_step)

    # --- distributed -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1 or not getattr(self, "sync_batchnorm", False):
            return
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules()):
            return
        if trainer.strategy.root_device.type in ("cuda", "xpu", "hpu"):
            nn.SyncBatchNorm.convert_sync_batchnorm(self)
        else:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                "sync_batchnorm: PyTorch's SyncBatchNorm runs on GPUs only; on these CPU processes the "
                "BatchNorm statistics stay per process.",
                category=UserWarning,
            )

    # --- checkpoints -------------------------------------------------------------------------------

    def checkpoint_meta(self) -> CheckpointMeta:
        return CheckpointMeta(
            kind="pretrain",
            method=self.method,
            backbone=ModelSpec.from_model(self.backbone),
            backbone_prefix=self.backbone_prefix,
            pool=self.default_pool,
            mean=self.mean,
            std=self.std,
            world_size=distributed.world_size(),
        )


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher ← momentum · teacher + (1 − momentum) · student`` over the parameters, as one
    ``_foreach_lerp_`` (a handful of kernels for the whole model, no host sync)."""
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists.")
    torch._foreach_lerp_(t_params, [p.detach() for p in s_params], 1.0 - momentum)


def _with_size(view: Any, size: int) -> Any:
    import dataclasses

    return dataclasses.replace(view, size=size)
