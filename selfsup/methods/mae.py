"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"), on the same timm ViT
encoder as SimCLR. Reads in the paper's order: patchify → random masking → encoder on the visible
patches → decoder with mask tokens → loss on the masked patches. As in the paper and the reference
(facebookresearch/mae ``models_mae.py``), the encoder's position embedding is the fixed 2-D
sine-cosine table, not learned."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup.augment import CropFlipConfig
from selfsup.contract import as_config
from selfsup.encoders import encode_visible, fix_sincos_pos_embed, patchify
from selfsup.heads import MAEDecoder, default_decoder
from selfsup.losses import MaskedReconstructionLoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig


class MAE(PretrainModule):
    """Masked-autoencoder pretraining.

    Args:
        encoder: the encoder (see ``PretrainModule`` for it and the other shared arguments); the
            same values as for SimCLR. Its position embedding is replaced by the fixed sine-cosine
            table and frozen.
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
    """

    method = "mae"
    summary = "masked autoencoder: reconstruct 75% hidden patches"
    pooling = "avg"  # the paper's linear probe reads mean-pooled patch tokens

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_heads: int | None = None,
        norm_pix_loss: bool = True,
        augment: CropFlipConfig = CropFlipConfig(crop_scale=(0.2, 1.0)),
        optim: OptimConfig = OptimConfig(
            base_lr=1.5e-4, weight_decay=0.05, betas=(0.9, 0.95), warmup_epochs=40
        ),
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(
                f"mask_ratio must lie strictly between 0 and 1 (the fraction of patches to hide), got {mask_ratio}."
            )
        fix_sincos_pos_embed(self.encoder)
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
        self.augment_config = as_config(CropFlipConfig, augment)
        # float32 views: they are also the reconstruction targets
        self.set_views(
            [self.augment_config.to_view(self.image_size, interpolation="bicubic")], out_dtype=torch.float32
        )

    def compile_targets(self) -> list[nn.Module]:
        # MAE runs the encoder's pieces (patch embedding, masking, blocks) rather than its forward
        return [self.encoder.blocks, self.decoder]

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

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        (images,), _ = batch
        pred, target, mask = self(images)
        loss = self.guard(self.criterion(pred, target, mask))
        self.log_step(loss, len(images))
        return loss
