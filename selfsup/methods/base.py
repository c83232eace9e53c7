"""What every pretraining method shares, and nothing more: the encoder, the augmentation hook, the
optimiser set-up, and the checkpoint metadata that export and probing read."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from selfsup import distributed
from selfsup.augment import Normalize
from selfsup.encoders import (
    check_patch_grid,
    create_encoder,
    data_config,
    default_pool,
    encoder_spec,
    pooled_features,
)
from selfsup.guard import guard_loss
from selfsup.optim import OptimConfig, optimizer_and_schedule, param_groups

CHECKPOINT_KEY = "selfsup"
CHECKPOINT_FORMAT = 1


def _plain(value: Any) -> Any:
    """Dataclasses → dicts, recursively: checkpoints must load with ``torch.load(weights_only=True)``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def as_config(cls: type, value: Any) -> Any:
    """Accept a dataclass instance or a mapping of its fields (as stored in a checkpoint)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"expected {cls.__name__} or a dict of its fields, got {type(value).__name__}.")


class PretrainModule(L.LightningModule):
    """Base class of the self-supervised methods.

    Args:
        encoder: a timm ViT name (built with :func:`selfsup.encoders.create_encoder`) or an encoder
            instance made by it.
        img_size: input side in pixels (the CLI links it to ``data.image_size``). With an injected
            encoder, must be None or equal to the encoder's.
        patch_size: patch side for a named encoder (None: the name's default).
        encoder_kwargs: further timm ``VisionTransformer`` arguments for a named encoder
            (``depth``, ``embed_dim``, ``num_heads``, ``drop_path_rate``...).
        optim: optimiser and schedule (see :class:`selfsup.optim.OptimConfig`).
        skip_nonfinite_steps: steps with a NaN / infinite loss that may be skipped before training
            stops (0: stop at the first, naming the step and the last good checkpoint; see
            ``selfsup.guard``).
    """

    method: ClassVar[str] = ""

    def __init__(
        self,
        encoder: str | nn.Module = "vit_tiny_patch16_224",
        img_size: int | None = None,
        patch_size: int | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        optim: OptimConfig = OptimConfig(),
        skip_nonfinite_steps: int = 0,
    ) -> None:
        super().__init__()
        if skip_nonfinite_steps < 0:
            raise ValueError(f"skip_nonfinite_steps must be >= 0, got {skip_nonfinite_steps}.")
        self.skip_nonfinite_steps = skip_nonfinite_steps
        if isinstance(encoder, str):
            try:
                encoder = create_encoder(
                    encoder, img_size=img_size, patch_size=patch_size, **(encoder_kwargs or {})
                )
            except TypeError as err:
                raise ValueError(
                    f"encoder_kwargs {encoder_kwargs} do not fit timm's VisionTransformer: {err}"
                ) from None
        elif isinstance(encoder, VisionTransformer):
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
        else:
            raise TypeError(
                f"encoder must be a timm ViT name or a timm VisionTransformer, got {type(encoder).__name__}."
            )
        self.encoder: VisionTransformer = encoder
        self.optim = as_config(OptimConfig, optim)
        facts = data_config(encoder)
        self.image_size = facts["input_size"][-1]
        self.mean, self.std = facts["mean"], facts["std"]
        self.normalize = Normalize(self.mean, self.std)

    # --- data → augmentation (on the device, whole batches) ---------------------------------------

    def augment(self, images: torch.Tensor) -> Any:
        """uint8 batch → what ``training_step`` consumes (the method's views)."""
        raise NotImplementedError

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch[0], batch[1]
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"batch images are {tuple(images.shape[-2:])} but the encoder takes {self.image_size}-px images: "
                "set data.image_size to the encoder's img_size."
            )
        if self._trainer is not None and self._trainer.training:
            return self.augment(images), labels
        return self.normalize(images), labels

    # --- features ----------------------------------------------------------------------------------

    @property
    def default_pool(self) -> str:
        return default_pool(self.encoder, self.method)

    def features(self, images: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        """Normalised ``[B, 3, H, W]`` images → ``[B, D]`` encoder features (no head)."""
        return pooled_features(self.encoder, images, pool or self.default_pool)

    # --- optimisation ------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict:
        no_decay = {f"encoder.{name}" for name in self.encoder.no_weight_decay()}
        groups = param_groups(self, self.optim.weight_decay, no_decay)
        return optimizer_and_schedule(self.trainer, self.optim, groups)

    def guard(self, loss: torch.Tensor) -> torch.Tensor | None:
        """The loss, or None to skip a non-finite step (see ``selfsup.guard``)."""
        return guard_loss(self, loss, self.skip_nonfinite_steps)

    def log_step(self, loss: torch.Tensor, batch_size: int, **extra: float | torch.Tensor) -> None:
        """Log the loss (per step and epoch mean), the learning rate, and method-specific values."""
        self.log(
            "train/loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=False,
        )
        optimizer = self.optimizers(use_pl_optimizer=False) if self._trainer is not None else None
        if optimizer is not None and not isinstance(optimizer, list):
            self.log(
                "train/lr",
                optimizer.param_groups[0]["lr"],
                on_step=True,
                on_epoch=False,
                batch_size=batch_size,
            )
        for name, value in extra.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=batch_size)

    # --- distributed -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1 or not getattr(self, "sync_batchnorm", False):
            return
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules()):
            return
        if trainer.strategy.root_device.type in ("cuda", "xpu", "hpu"):
            nn.SyncBatchNorm.convert_sync_batchnorm(self)
        else:
            rank_zero_warn(
                "sync_batchnorm: PyTorch's SyncBatchNorm runs on GPUs only; on these CPU processes the "
                "BatchNorm statistics stay per process.",
                category=UserWarning,
            )

    # --- checkpoints -------------------------------------------------------------------------------

    def save_init_args(self, init_args: dict[str, Any]) -> None:
        """Record a subclass's constructor arguments (pass ``locals()`` first thing in ``__init__``) as
        plain hyperparameters: dataclasses become dicts, an injected encoder module is left out. Plain
        values keep checkpoints loadable with ``weights_only=True`` and loggers able to write them."""
        hparams = {
            k: _plain(v)
            for k, v in init_args.items()
            if k not in ("self", "__class__") and not isinstance(v, nn.Module)
        }
        self.save_hyperparameters(hparams)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "method": self.method,
            "encoder": encoder_spec(self.encoder),
            "mean": list(self.mean),
            "std": list(self.std),
            "pool": self.default_pool,
            "world_size": distributed.world_size(),
        }
