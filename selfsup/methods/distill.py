"""Knowledge distillation into a new encoder from a frozen teacher, on unlabelled images.

The recipe follows lightly-train's distillation (``lightly_train/_methods/distillationv2/
distillationv2.py``) and "Knowledge distillation: A good teacher is patient and consistent" (Beyer et
al. 2022): teacher and student see the *same* strongly augmented view; the student's features,
through a learned linear projection where the widths differ, regress the teacher's. Targets: the
teacher's pooled feature (cosine or MSE) and, optionally, its patch tokens (the student's token grid
projected and bilinearly resized to the teacher's grid, MSE), which carry the dense knowledge
detection and segmentation use.

The teacher never trains: it runs under ``torch.inference_mode`` (and bf16 autocast on GPUs), its
outputs are never in the autograd graph, and its weights are left out of checkpoints (reloaded from
``teacher`` on resume). Export and probing use the student (``encoder``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment import SimCLRViewConfig
from selfsup.augment.normalize import Normalize
from selfsup.contract import as_config, model_weights, set_model_weights
from selfsup.encoders import is_vit, is_vit_name, pooled_features
from selfsup.load import load_encoder
from selfsup.losses.distillation import FeatureDistillationLoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig

TEACHER_PREFIX = "teacher."


def load_teacher(source: str) -> nn.Module:
    """A frozen teacher from a selfsup export folder or checkpoint, a timm ``local-dir:`` folder, or
    a timm name whose weights timm has cached (weights read from safetensors / ``weights_only``
    files only; see :func:`selfsup.load.load_encoder`)."""
    return load_encoder(source, pretrained=True).requires_grad_(False).eval()


class Distill(PretrainModule):
    """Distil a frozen teacher's features into the student ``encoder``.

    Args:
        encoder: the student: a timm ViT name (with ``img_size``, ``patch_size``, ``encoder_kwargs`` as
            for every method) or, for the pooled target alone, any timm model name (a CNN).
        teacher: a selfsup export folder or checkpoint, or ``local-dir:DIR`` (a timm folder).
        loss: ``cosine`` or ``mse`` on the pooled features.
        center_momentum: centre the pooled target and the student's projection on a running mean of
            the teacher's pooled features (``c <- m c + (1 - m) mean``, as DINO centres its teacher),
            so the loss weighs what tells images apart rather than the direction that every
            teacher feature shares; None (default): no centring. See
            :class:`~selfsup.losses.FeatureDistillationLoss` and BENCHMARKS.md (distillation).
        patch_weight: weight of the patch-token target (MSE after projection and resizing to the
            teacher's grid); 0 turns it off. Needs ViTs on both sides.
        augment: the one view both networks see (SimCLR's augmentation by default: strong and
            identical for both, as Beyer et al. recommend).
        optim: AdamW, base lr 1e-3 per 256 images, weight decay 0.05.
    """

    method = "distill"
    summary = "distil a frozen teacher's features into a student"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        teacher: str,
        loss: Literal["cosine", "mse"] = "cosine",
        center_momentum: float | None = None,
        patch_weight: float = 0.0,
        augment: SimCLRViewConfig = SimCLRViewConfig(),
        optim: OptimConfig = OptimConfig(base_lr=1e-3, weight_decay=0.05, warmup_epochs=5),
        **kwargs: Any,
    ) -> None:
        self._allow_any_timm = patch_weight == 0
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        if patch_weight < 0:
            raise ValueError(f"patch_weight must be >= 0, got {patch_weight}.")
        if center_momentum is not None and loss == "mse":
            raise ValueError(
                "center_momentum changes only the cosine loss: the MSE is the same after subtracting one "
                "vector from both sides. Use loss: cosine with center_momentum, or drop center_momentum."
            )
        self.teacher_source = teacher
        self.teacher = load_teacher(teacher)
        cfg = self.teacher.pretrained_cfg
        self.teacher_normalize = Normalize(cfg.get("mean", self.mean), cfg.get("std", self.std))
        self.teacher_size = _input_size(self.teacher) or self.image_size
        self.patch_weight = float(patch_weight)
        if patch_weight > 0 and not (is_vit(self.encoder) and is_vit(self.teacher)):
            raise ValueError(
                "patch_weight > 0 needs a ViT student and a ViT teacher (patch tokens on both sides)."
            )
        student_dim, teacher_dim = self.encoder.num_features, self.teacher.num_features
        # the loss is at its minimum for a student equal to the teacher: no projection at equal widths
        # (for the pooled and the patch-token targets alike)
        self.projection = nn.Identity() if student_dim == teacher_dim else nn.Linear(student_dim, teacher_dim)
        self.patch_projection: nn.Module | None = None
        if patch_weight > 0:
            student_width, teacher_width = self.encoder.embed_dim, self.teacher.embed_dim
            self.patch_projection = (
                nn.Identity() if student_width == teacher_width else nn.Linear(student_width, teacher_width)
            )
        self.criterion = FeatureDistillationLoss(loss, teacher_dim, center_momentum)
        self.patch_criterion = FeatureDistillationLoss("mse")
        self.augment_config = as_config(SimCLRViewConfig, augment)
        self.set_views([self.augment_config.to_view(self.image_size)])

    def build_encoder(self, encoder, img_size, patch_size, encoder_kwargs):
        if isinstance(encoder, str) and getattr(self, "_allow_any_timm", False) and not is_vit_name(encoder):
            if patch_size is not None:
                raise ValueError(f"patch_size applies to ViT students; {encoder!r} has no patches.")
            return load_encoder(encoder, **(encoder_kwargs or {})).train()
        return PretrainModule.build_encoder(encoder, img_size, patch_size, encoder_kwargs)

    @torch.no_grad()
    def teacher_targets(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(pooled [B, Dt], patch tokens [B, Lt, Dt] or None)`` of the teacher on the student's
        view, re-normalised (and resized) for the teacher; plain tensors outside any graph."""
        x = view.float() * self.normalize.std + self.normalize.mean  # back to [0, 1]
        x = (x - self.teacher_normalize.mean) / self.teacher_normalize.std
        if x.shape[-1] != self.teacher_size:
            x = F.interpolate(
                x, size=(self.teacher_size, self.teacher_size), mode="bilinear", align_corners=False
            )
        with (
            torch.inference_mode(),
            torch.autocast(x.device.type, torch.bfloat16, enabled=x.device.type == "cuda"),
        ):
            tokens = self.teacher.forward_features(x)
            pooled = self.teacher.forward_head(tokens, pre_logits=True)
            patches = (
                tokens[:, self.teacher.num_prefix_tokens :] if self.patch_projection is not None else None
            )
        # clones leave inference mode: the loss may save them for its backward
        return pooled.float().clone(), None if patches is None else patches.float().clone()

    def student_patches(self, tokens: torch.Tensor, teacher_tokens: int) -> torch.Tensor:
        """Student patch tokens projected to the teacher's width and resized to its grid."""
        patches = self.patch_projection(tokens[:, self.encoder.num_prefix_tokens :])
        b, length, d = patches.shape
        gh, gw = self.encoder.patch_embed.grid_size
        side = round(teacher_tokens**0.5)
        if (gh, gw) == (side, side):
            return patches  # the same grid: nothing to resize
        grid = patches.transpose(1, 2).reshape(b, d, gh, gw)
        grid = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        (view,), _ = batch
        target, target_patches = self.teacher_targets(view)
        self.criterion.update_center(target)  # a no-op without center_momentum
        if target_patches is None:
            features = pooled_features(self.encoder, view, self.default_pool)
            loss = self.criterion(self.projection(features), target)
            extra: dict[str, torch.Tensor] = {}
        else:
            tokens = self.encoder.forward_features(view)
            features = self.encoder.pool(tokens, pool_type=self.default_pool)
            pooled_loss = self.criterion(self.projection(features), target)
            patch_loss = self.patch_criterion(
                self.student_patches(tokens, target_patches.shape[1]), target_patches
            )
            loss = pooled_loss + self.patch_weight * patch_loss
            extra = {"loss_pooled": pooled_loss.detach(), "loss_patches": patch_loss.detach()}
        loss = self.guard(loss)
        self.log_step(loss, len(view), **extra)
        return {"loss": loss, "features": features.detach()}

    # --- the teacher stays out of checkpoints ------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        weights = model_weights(checkpoint)
        set_model_weights(checkpoint, {k: v for k, v in weights.items() if not k.startswith(TEACHER_PREFIX)})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        model_weights(checkpoint).update(
            {TEACHER_PREFIX + k: v for k, v in self.teacher.state_dict().items()}
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: no dropout, no drop-path, fixed BatchNorm statistics
        return self


def _input_size(model: nn.Module) -> int | None:
    if is_vit(model) and not getattr(model, "dynamic_img_size", False):
        return int(model.patch_embed.img_size[0])
    return None
