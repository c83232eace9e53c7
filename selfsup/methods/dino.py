"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"):
self-distillation with no labels. A student (encoder + DINO head) matches, over multi-crop views,
the centred and sharpened output of a momentum teacher (an EMA of the student) that sees only the
global crops.

Followed: facebookresearch/dino ``main_dino.py`` (``DataAugmentationDINO``, ``train_one_epoch``,
the schedules), ``utils.py`` (``cosine_scheduler``, ``clip_gradients``,
``cancel_gradients_last_layer``, ``MultiCropWrapper``) and ``vision_transformer.py`` (``DINOHead``).
The loss and head are ``selfsup.losses.DINOLoss`` and ``selfsup.heads.DINOHead``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from selfsup.contract import as_config
from selfsup.heads.dino import DINOHead
from selfsup.losses.dino import DINOLoss, teacher_temperature
from selfsup.losses.koleo import KoLeoLoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig


@dataclass(frozen=True)
class DINOViews:
    """DINO's multi-crop augmentation (``DataAugmentationDINO``): 2 global crops and ``local_crops``
    small ones, flip, colour jitter (0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale with p=0.2; Gaussian
    blur with p=1.0 on the first global crop, 0.1 on the second and 0.5 on the local ones; solarize
    with p=0.2 on the second global crop only.

    Attributes:
        global_scale, local_scale: crop area ranges (0.4-1 and 0.05-0.4 in the paper).
        local_crops: number of local crops (8 or 10 in the paper; 0 gives the 2-view variant).
        local_size: side of the local crops; None scales the paper's 96 / 224 to the image size,
            rounded to a whole number of patches (224 px → 96, 32 px → 16).
        blur_min_size: no blur on crops smaller than this (blur of sigma 0.1-2 px wipes out 32-px images).
    """

    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    local_crops: int = 8
    local_size: int | None = None
    hflip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_probs: tuple[float, float, float] = (1.0, 0.1, 0.5)
    solarize_prob: float = 0.2
    blur_min_size: int = 64

    def __post_init__(self) -> None:
        if self.local_crops < 0:
            raise ValueError(f"local_crops must be >= 0, got {self.local_crops}.")

    def views(self, image_size: int, patch_size: int) -> list:
        """The :class:`~selfsup.augment.ViewConfig` of every crop: global 1, global 2, locals."""
        from selfsup.augment import ViewConfig
        from selfsup.augment.views import local_crop_size

        local_size = local_crop_size(image_size, patch_size, self.local_size)
        common = {
            "hflip_prob": self.hflip_prob,
            "jitter_prob": self.jitter_prob,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "hue": self.hue,
            "grayscale_prob": self.grayscale_prob,
        }

        def blur(p: float, size: int) -> float:
            return p if size >= self.blur_min_size else 0.0

        first = ViewConfig(
            size=image_size,
            crop_scale=self.global_scale,
            blur_prob=blur(self.blur_probs[0], image_size),
            **common,
        )
        second = dataclasses.replace(
            first, blur_prob=blur(self.blur_probs[1], image_size), solarize_prob=self.solarize_prob
        )
        local = ViewConfig(
            size=local_size,
            crop_scale=self.local_scale,
            blur_prob=blur(self.blur_probs[2], local_size),
            **common,
        )
        return [first, second, *([local] * self.local_crops)]


class DINO(PretrainModule):
    """DINO pretraining of a ViT.

    Args:
        encoder: the student's encoder (see ``PretrainModule`` for it and the shared arguments). It
            is built with ``dynamic_img_size`` so one network takes the global and the local crops;
            ``encoder_kwargs: {drop_path_rate: 0.1}`` is DINO's ViT-S setting (the teacher, in eval
            mode, never drops paths).
        out_dim, hidden_dim, bottleneck_dim, head_layers, norm_last_layer, use_bn_in_head: the DINO
            head (65536 prototypes on ImageNet; fewer for small data).
        teacher_momentum: EMA momentum at the first step; it follows a cosine to 1 at the last.
        teacher_temperature, warmup_teacher_temperature, warmup_teacher_temperature_epochs: the
            teacher's temperature, linear from 0.04 to 0.07 over the first 30 epochs.
        student_temperature: 0.1.
        center_momentum: of the centre's EMA (0.9), all-reduced across processes.
        freeze_last_layer: epochs during which the head's last layer gets no update (1).
        clip_grad: per-parameter gradient-norm clipping, as the reference's ``clip_gradients``
            (3.0; 0 turns it off).
        koleo_weight: weight of DINOv2's KoLeo regulariser on the student's class tokens of each
            global crop (:class:`~selfsup.losses.KoLeoLoss`). 0, DINO's, by default: small data needs it
            (the digits recipe's class tokens otherwise converge to one point, BENCHMARKS.md).
        augment: the multi-crop views.
        optim: AdamW, base lr 5e-4 per 256 images, 10 warm-up epochs, cosine to 1e-6 / 5e-4 of the
            peak; weight decay cosine from 0.04 to 0.4; no decay on biases and norms.
    """

    method = "dino"
    summary = "self-distillation with a momentum teacher and multi-crop"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        head_layers: int = 3,
        norm_last_layer: bool = True,
        use_bn_in_head: bool = False,
        teacher_momentum: float = 0.996,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        warmup_teacher_temperature_epochs: int = 30,
        student_temperature: float = 0.1,
        center_momentum: float = 0.9,
        freeze_last_layer: int = 1,
        clip_grad: float = 3.0,
        koleo_weight: float = 0.0,
        augment: DINOViews = DINOViews(),
        optim: OptimConfig = OptimConfig(
            base_lr=5e-4, weight_decay=0.04, weight_decay_end=0.4, warmup_epochs=10, min_lr_ratio=2e-3
        ),
        **kwargs: Any,
    ) -> None:
        views = as_config(DINOViews, augment)
        if views.local_crops > 0 and isinstance(encoder, str):
            kwargs["encoder_kwargs"] = {**(kwargs.get("encoder_kwargs") or {}), "dynamic_img_size": True}
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        if views.local_crops > 0 and not getattr(self.encoder, "dynamic_img_size", False):
            raise ValueError(
                "DINO's local crops need an encoder built with dynamic_img_size=True (timm): pass the encoder "
                "by name, or build the injected one with dynamic_img_size=True."
            )
        if freeze_last_layer < 0 or clip_grad < 0 or koleo_weight < 0:
            raise ValueError(
                f"freeze_last_layer, clip_grad and koleo_weight must be >= 0, got {freeze_last_layer}, "
                f"{clip_grad}, {koleo_weight}."
            )
        self.koleo_weight = float(koleo_weight)
        self.koleo = KoLeoLoss()
        self.use_bn_in_head = use_bn_in_head
        self.head = DINOHead(
            self.encoder.num_features,
            out_dim,
            hidden_dim,
            bottleneck_dim,
            head_layers,
            use_bn_in_head,
            norm_last_layer,
        )
        self.add_momentum_teacher("encoder", "teacher_encoder", teacher_momentum)
        self.add_momentum_teacher("head", "teacher_head", teacher_momentum)
        self.criterion = DINOLoss(out_dim, student_temperature, center_momentum)
        self.temperature_schedule = (
            warmup_teacher_temperature_epochs,
            warmup_teacher_temperature,
            teacher_temperature,
        )
        # the logged entropy and its maximum, for selfsup.eval.collapse.CollapseWarning
        self.max_entropies = {"train/teacher_entropy": math.log(out_dim)}
        self.freeze_last_layer = freeze_last_layer
        self.clip_grad = clip_grad
        self.augment_config = views
        self.set_views(views.views(self.image_size, int(self.encoder.patch_embed.patch_size[0])))

    # --- declarations ------------------------------------------------------------------------------

    @property
    def backbone(self) -> nn.Module:
        """The teacher's encoder: DINO's evaluations and released weights are the teacher's."""
        return self.teacher_encoder

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:  # the teacher never drops paths (nor anything else)
            self.teacher_encoder.eval()
            # with BatchNorm in the head the reference's teacher normalises by its batch's statistics
            # (it stays in train mode; its EMA copies parameters only, so running statistics would
            # stay at their initial 0 / 1)
            self.teacher_head.train(self.use_bn_in_head)
        return self

    # --- the step ----------------------------------------------------------------------------------

    def teacher_temperature(self, epoch: int) -> float:
        warmup_epochs, start, end = self.temperature_schedule
        return teacher_temperature(epoch, warmup_epochs, start, end)

    def student_forward(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Head outputs ``[B, K]`` per view, as DINO's ``MultiCropWrapper``: the encoder runs once per
        crop size, and the head once on every crop's features together (so a BatchNorm in the head
        normalises over global and local crops at once, as the reference's)."""
        return self.student_head(self.student_features(views))

    def student_features(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """The student encoder's features ``[B, D]`` per view, one encoder pass per crop size."""
        features: list[torch.Tensor | None] = [None] * len(views)
        for size in dict.fromkeys(v.shape[-1] for v in views):
            index = [i for i, v in enumerate(views) if v.shape[-1] == size]
            out = self.features_of(self.encoder, torch.cat([views[i] for i in index]))
            for i, chunk in zip(index, out.chunk(len(index)), strict=True):
                features[i] = chunk
        return features  # type: ignore[return-value]

    def student_head(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.head(torch.cat(features)).chunk(len(features)))

    def features_of(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return encoder.forward_head(encoder.forward_features(images), pre_logits=True)

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        views, _ = batch
        with torch.no_grad():  # only the global crops reach the teacher
            teacher_out = self.teacher_head(self.features_of(self.teacher_encoder, torch.cat(views[:2])))
        features = self.student_features(views)
        student_out = self.student_head(features)
        temperature = self.teacher_temperature(self.current_epoch)
        loss = self.criterion(student_out, teacher_out, temperature)
        extra = {}
        if self.koleo_weight > 0:  # per global crop, on this process's rows, as DINOv2's
            extra["koleo"] = sum(self.koleo(crop) for crop in features[:2])
            loss = loss + self.koleo_weight * extra["koleo"]
        loss = self.guard(loss)
        self.criterion.update_center(teacher_out)
        with torch.no_grad():
            probs = torch.softmax((teacher_out.float() - self.criterion.center) / temperature, dim=-1)
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
        self.log_step(
            loss,
            len(views[0]),
            teacher_entropy=entropy,
            teacher_temperature=temperature,
            teacher_momentum=self.teacher_momentum(self.global_step),
            **extra,
        )
        return {"loss": loss}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # the reference clips every parameter's gradient to norm clip_grad on its own, then cancels
        # the last layer's gradients during the first freeze_last_layer epochs (of the student's head:
        # the teacher's gets no gradients; freezing it was lightly#1586)
        if self.clip_grad > 0:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if grads:
                scales = torch._foreach_norm(grads)  # min(1, clip / (norm + 1e-6)), on the device
                torch._foreach_add_(scales, 1e-6)
                torch._foreach_reciprocal_(scales)
                torch._foreach_mul_(scales, self.clip_grad)
                torch._foreach_clamp_max_(scales, 1.0)
                torch._foreach_mul_(grads, scales)
        if self.current_epoch < self.freeze_last_layer:
            for p in self.head.last_layer_parameters():
                p.grad = None
        super().on_before_optimizer_step(optimizer)
