"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
Predictive Architecture"): from one large context block of an image, a narrow predictor predicts the
features that a target encoder (an EMA of the context encoder) gives a few hidden target blocks.
No augmentation but a random resized crop; no pixel reconstruction; no negatives.

Followed: facebookresearch/ijepa ``src/train.py`` (the step: the target encoder on the full image,
its tokens layer-normed over the feature dimension and gathered at the target blocks; the context
encoder on the context patches only; the predictor; ``smooth_l1_loss``; the EMA after each optimiser
step with a momentum rising **linearly** from 0.996 to 1), ``src/masks/multiblock.py`` (the masks:
:mod:`selfsup.encoders.multiblock_masks`), ``src/models/vision_transformer.py`` (a ViT without class
token and with the fixed sine-cosine position table; the predictor: :mod:`selfsup.heads.jepa_predictor`),
``src/transforms.py`` with ``configs/in1k_vith14_ep300.yaml`` (crop scale 0.3-1, no flip, colour or
blur) and ``src/helper.py`` (AdamW, weight decay 0.04 → 0.4 on a cosine, biases and norms excluded).

Departures: the masks are drawn for the whole batch at once in ``on_after_batch_transfer`` rather
than per image in the DataLoader's collator (same rules and distribution); the learning rate warms
up from 0 rather than from ``start_lr`` (0.2 of the peak), and its floor is ``min_lr_ratio`` times
the peak; the loss is not all-reduced (DDP averages the gradients, so the step is the same; the
logged loss is this process's).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from selfsup.augment import CropFlipConfig
from selfsup.contract import as_config
from selfsup.encoders import encode_kept, fix_sincos_pos_embed
from selfsup.encoders.multiblock_masks import MultiBlockMasks, MultiBlockMaskSampler
from selfsup.heads import JEPAPredictor
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig

# the reference's ViT: no class token, so the features are the mean of the patch tokens after the
# final norm (timm's fc_norm off keeps that norm where selfsup's features read it)
REFERENCE_ENCODER = {"class_token": False, "global_pool": "avg", "fc_norm": False}


class IJEPA(PretrainModule):
    """I-JEPA pretraining of a ViT.

    Args:
        encoder: the context encoder (see ``PretrainModule`` for it and the shared arguments). A
            named encoder is built without class token, as the reference's (``encoder_kwargs`` may
            set ``class_token: true``); its position embedding becomes the fixed sine-cosine table.
        encoder_kwargs: further timm arguments, merged over ``class_token: false,
            global_pool: avg, fc_norm: false``.
        predictor_dim, predictor_depth: the narrow predictor (the reference's defaults: 384 x 6;
            its ViT-H/14 configs use 384 x 12).
        predictor_heads: the predictor's heads (None: the encoder's, as the reference).
        num_targets, target_scale, target_aspect: the target blocks (4, 0.15-0.2 of the patches,
            height / width 0.75-1.5).
        context_scale: the context block before the targets are cut out (0.85-1).
        min_keep: a context keeps more than this many patches (10; lower it on small patch grids).
        allow_overlap: let the context see target patches (off in the paper).
        momentum, momentum_end: the target encoder's EMA momentum at the first and last optimiser
            step, linear in between (0.996 → 1).
        augment: random resized crop of scale 0.3-1, no flip (the reference's only augmentation).
        optim: AdamW, peak lr 1e-3 for the reference's global batch of 2048 (base lr 1.25e-4 per
            256), weight decay 0.04 → 0.4 (cosine), 40 warm-up epochs, floor 1e-6 (ratio 1e-3).
    """

    method = "ijepa"
    summary = "predict a target encoder's features of hidden blocks from a context block"
    pooling = "avg"  # the reference's encoder has no class token; its probes read the patch mean

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        encoder_kwargs: dict[str, Any] | None = None,
        predictor_dim: int = 384,
        predictor_depth: int = 6,
        predictor_heads: int | None = None,
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_keep: int = 10,
        allow_overlap: bool = False,
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        augment: CropFlipConfig = CropFlipConfig(crop_scale=(0.3, 1.0), hflip_prob=0.0),
        optim: OptimConfig = OptimConfig(
            base_lr=1.25e-4, weight_decay=0.04, weight_decay_end=0.4, warmup_epochs=40, min_lr_ratio=1e-3
        ),
        **kwargs: Any,
    ) -> None:
        if isinstance(encoder, str):
            encoder_kwargs = {**REFERENCE_ENCODER, **(encoder_kwargs or {})}
        super().__init__(encoder, encoder_kwargs=encoder_kwargs, optim=optim, **kwargs)
        self.save_init_args(locals())
        if not isinstance(self.encoder.patch_drop, nn.Identity):
            raise ValueError(
                "I-JEPA selects the context patches itself: build the encoder without patch_drop_rate."
            )
        fix_sincos_pos_embed(self.encoder)
        grid = tuple(self.encoder.patch_embed.grid_size)
        self.mask_sampler = MultiBlockMaskSampler(
            grid, num_targets, target_scale, target_aspect, context_scale, min_keep, allow_overlap
        )
        self.predictor = JEPAPredictor(
            grid,
            self.encoder.embed_dim,
            dim=predictor_dim,
            depth=predictor_depth,
            num_heads=predictor_heads or self.encoder.blocks[0].attn.num_heads,
        )
        self.add_momentum_teacher("encoder", "target_encoder", momentum, momentum_end)
        self.augment_config = as_config(CropFlipConfig, augment)
        self.set_views([self.augment_config.to_view(self.image_size)])

    # --- declarations ------------------------------------------------------------------------------

    @property
    def backbone(self) -> nn.Module:
        """The target encoder, which the reference evaluates and releases."""
        return self.target_encoder

    def teacher_momentum(self, step: int, index: int = 0) -> float:
        """The reference's linear schedule: ``start + (end - start) * step / T`` (``T`` =
        :attr:`total_steps`), so the first update uses ``start``."""
        _, _, start, end = self._teachers[index]
        return start + (end - start) * min(1.0, max(0, step) / max(1, self.total_steps))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:  # the target never drops paths
            self.target_encoder.eval()
        return self

    def compile_targets(self) -> list[nn.Module]:
        # the context encoder runs piecewise (patch embedding, selection, blocks), the target whole
        return [self.encoder.blocks, self.target_encoder.blocks, self.predictor]

    # --- masks: drawn for the whole batch before the step ------------------------------------------

    def draw_masks(self, batch_size: int, generator: torch.Generator | None = None) -> MultiBlockMasks:
        """The batch's masks, drawn on the CPU in a fixed number of tensor operations (as the
        reference's collator draws them on the host) and copied to the device without a sync."""
        masks = self.mask_sampler(batch_size, generator)
        if self.device.type == "cpu":
            return masks
        pin = self.device.type == "cuda"
        return MultiBlockMasks(
            *((t.pin_memory() if pin else t).to(self.device, non_blocking=True) for t in masks)
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        views, labels = super().on_after_batch_transfer(batch, dataloader_idx)
        if self._trainer is not None and self._trainer.training:
            # the reference draws masks in the DataLoader's collator, a Python loop per image; here
            # the whole batch is drawn on the host in a fixed number of tensor operations, before
            # the step, and reaches the step as the batch's third item
            return views, labels, self.draw_masks(len(views[0]))
        return views, labels

    # --- the step ----------------------------------------------------------------------------------

    def forward(
        self, images: torch.Tensor, masks: MultiBlockMasks | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images ``[B, C, H, W]`` → ``(predictions, targets)``, both ``[B, M, Kt, D]``:
        the predictor's output and the target encoder's layer-normed features at the M target
        blocks. Without ``masks`` they are drawn here."""
        masks = self.draw_masks(len(images)) if masks is None else masks
        with torch.no_grad():
            tokens = self.target_encoder.forward_features(images)[:, self.target_encoder.num_prefix_tokens :]
            tokens = F.layer_norm(tokens, (tokens.shape[-1],))
            targets = gather_tokens(tokens, masks.targets)
        context = encode_patches(self.encoder, images, masks.context)
        return self.predictor(context, masks.context, masks.targets), targets

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        (images,), _, masks = batch
        pred, target = self(images, masks)
        loss = self.guard(F.smooth_l1_loss(pred, target.to(pred.dtype)))
        self.log_step(
            loss,
            len(images),
            context_patches=masks.context.shape[1],
            target_patches=masks.targets.shape[2],
            momentum=self.teacher_momentum(self.global_step),
        )
        return loss


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``tokens [B, L, D]`` at ``ids [B, ...]`` → ``[B, ..., D]``."""
    flat = ids.reshape(len(ids), -1)
    picked = tokens.gather(1, flat.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return picked.reshape(*ids.shape, tokens.shape[-1])


def encode_patches(encoder: VisionTransformer, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The context encoder on the patches at ``ids [B, K]`` only (MAE's visible-token path with
    given positions, :func:`selfsup.encoders.encode_kept`): ``[B, K, D]`` patch tokens after the final
    norm (prefix tokens, if any, take part and are dropped)."""
    return encode_kept(encoder, images, ids)[:, encoder.num_prefix_tokens :]
