"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"), on the same timm ViT
encoder as SimCLR. Reads in the paper's order: patchify → random masking → encoder on the visible
patches → decoder with mask tokens → loss on the masked patches."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup.augment import CropFlipAugment, CropFlipConfig
from selfsup.encoders import encode_visible, patchify
from selfsup.heads import MAEDecoder, default_decoder
from selfsup.losses import MaskedReconstructionLoss
from selfsup.methods.base import PretrainModule, as_config
from selfsup.optim import OptimConfig


class MAE(PretrainModule):
    """Masked-autoencoder pretraining.

    Args:
        encoder, img_size, patch_size, encoder_kwargs: the encoder (see ``PretrainModule``); the
            same values as for SimCLR.
        mask_ratio: fraction of patches removed per image, in (0, 1); the paper's 0.75 by default.
            ``round(L * (1 - mask_ratio))`` patches stay visible.
        decoder_dim, decoder_depth, decoder_heads: the decoder. ``None`` picks the default for the
            encoder's width (``selfsup.heads.mae_decoder.DECODER_DEFAULTS``): 4 x 128 for ViT-Tiny,
            4 x 256 for ViT-Small, the paper's 8 x 512 from ViT-Base up; heads = width / 32.
        norm_pix_loss: normalise each target patch by its own mean and variance (the paper's default).
        augment: random resized crop (scale 0.2 to 1) and horizontal flip.
        optim: AdamW with betas (0.9, 0.95), base learning rate 1.5e-4 per 256 images
            (``lr = base_lr * global_batch / 256``), weight decay 0.05, cosine with warm-up: the
            paper's recipe.
        skip_nonfinite_steps: NaN / infinite-loss steps to skip before stopping (0: stop at the first).
    """

    method = "mae"

    def __init__(
        self,
        encoder: str | nn.Module = "vit_tiny_patch16_224",
        img_size: int | None = None,
        patch_size: int | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        mask_ratio: float = 0.75,
        decoder_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_heads: int | None = None,
        norm_pix_loss: bool = True,
        augment: CropFlipConfig = CropFlipConfig(crop_scale=(0.2, 1.0)),
        optim: OptimConfig = OptimConfig(
            base_lr=1.5e-4, weight_decay=0.05, betas=(0.9, 0.95), warmup_epochs=40
        ),
        skip_nonfinite_steps: int = 0,
    ) -> None:
        super().__init__(encoder, img_size, patch_size, encoder_kwargs, optim, skip_nonfinite_steps)
        self.save_init_args(locals())
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(
                f"mask_ratio must lie strictly between 0 and 1 (the fraction of patches to hide), got {mask_ratio}."
            )
        self.mask_ratio = mask_ratio
        self.patch_size = int(self.encoder.patch_embed.patch_size[0])
        self.in_chans = int(self.encoder.patch_embed.proj.in_channels)
        depth, width = default_decoder(self.encoder.embed_dim)
        width = decoder_dim or width
        self.decoder = MAEDecoder(
            grid_size=self.encoder.patch_embed.grid_size,
            encoder_dim=self.encoder.embed_dim,
            patch_dim=self.patch_size**2 * self.in_chans,
            dim=width,
            depth=decoder_depth or depth,
            num_heads=decoder_heads or max(1, width // 32),
            num_prefix_tokens=self.encoder.num_prefix_tokens,
        )
        self.criterion = MaskedReconstructionLoss(norm_pix_loss)
        self.view_augment = CropFlipAugment(
            self.image_size, self.mean, self.std, as_config(CropFlipConfig, augment), resample="BICUBIC"
        )

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        return self.view_augment(images)

    def forward(
        self, images: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised images ``[B, C, H, W]`` → ``(pred [B, L, p*p*C], target [B, L, p*p*C], mask [B, L])``.

        ``pred`` lives in the loss's target space (per-patch normalised with ``norm_pix_loss``);
        ``mask`` is 1 for the patches that were hidden.
        """
        tokens, masked = encode_visible(
            self.encoder, images, self.mask_ratio if mask_ratio is None else mask_ratio, generator
        )
        pred = self.decoder(tokens, masked.ids_restore)
        return pred, patchify(images, self.patch_size), masked.mask

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor | None:
        images, _ = batch
        pred, target, mask = self(images)
        loss = self.guard(self.criterion(pred, target, mask))
        if loss is not None:
            self.log_step(loss, len(images))
        return loss
