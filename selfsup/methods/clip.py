"""CLIP (Radford et al. 2021), SigLIP (Zhai et al. 2023) and LiT (Zhai et al. 2022): image-text
contrastive pretraining of selfsup's ViT against open_clip's text transformer.

Followed: open_clip's ``src/open_clip/model.py`` (``CustomTextCLIP``: ``encode_image`` /
``encode_text``, the text tower built from ``CLIPTextCfg``'s fields, the loss-side learnable
temperature and bias) and ``src/open_clip/loss.py``. Departures: the image tower is selfsup's timm
ViT (any ``encoder``), pooled as the other methods pool it and projected by a bias-free linear layer
(open_clip's ``visual.proj``); the logit scale and bias live in the loss modules
(:mod:`selfsup.losses.clip`, :mod:`selfsup.losses.siglip`); the augmentation is one batched view on
the device (a random resized crop at scale 0.9-1 by default, as CLIP's training transform).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from torch import nn

from selfsup.augment import ViewConfig
from selfsup.contract import as_config
from selfsup.losses.clip import CLIPLoss
from selfsup.losses.siglip import SigLIPLoss
from selfsup.methods.base import DEFAULT_ENCODER, PretrainModule
from selfsup.optim import OptimConfig

CLIP_VIEW = ViewConfig(crop_scale=(0.9, 1.0), hflip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0)
"""CLIP's training view: a random resized crop at scale 0.9-1, nothing else."""


class CLIP(PretrainModule):
    """Image-text pretraining: the ViT's pooled feature, linearly projected, against open_clip's text
    transformer, with the CLIP (softmax) or SigLIP (sigmoid) loss over the global batch.

    Batches are ``(uint8 images, tokens)`` (``tokens``: ``[B, context_length]`` int64, open_clip's
    tokenizer; :class:`selfsup.ImageTextDataModule` makes them). The exported backbone (``selfsup
    export``, ``selfsup probe``) is the image tower's ViT.

    Args:
        encoder: the image tower's ViT (see ``PretrainModule`` for it and the shared arguments:
            ``img_size``, ``patch_size``, ``encoder_kwargs``, ``init_from``...).
        embed_dim: the shared image-text embedding's dimension.
        text_width, text_layers, text_heads: open_clip's ``TextTransformer`` (CLIP ViT-B: 512, 12, 8).
        context_length: tokens per caption; must equal the data's ``context_length``.
        vocab_size: the tokenizer's vocabulary (open_clip's BPE: 49408).
        loss: ``clip`` (symmetric InfoNCE, learnable temperature) or ``siglip`` (pairwise sigmoid,
            learnable temperature and bias).
        logit_scale_init: initial ``exp(logit_scale)``; None: 1/0.07 for ``clip``, 10 for ``siglip``.
        max_logit_scale: ``clip``: the clamp on ``exp(logit_scale)`` (CLIP: 100).
        logit_bias_init: ``siglip``: the initial bias (-10).
        gather_distributed: contrast with the embeddings of every process (the global batch).
        lock_image: LiT: freeze the image tower (no gradient, eval mode) that ``init_from`` loads;
            only the text tower and the two projections train.
        augment: the one view (default: random resized crop at scale 0.9-1, no flip, no colour).
        optim: optimiser and schedule (CLIP: AdamW, betas 0.9 / 0.98, weight decay 0.2).
    """

    method = "clip"
    summary = "image-text: CLIP / SigLIP against a text transformer; LiT with lock_image"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        embed_dim: int = 512,
        text_width: int = 512,
        text_layers: int = 12,
        text_heads: int = 8,
        context_length: int = 77,
        vocab_size: int = 49408,
        loss: Literal["clip", "siglip"] = "clip",
        logit_scale_init: float | None = None,
        max_logit_scale: float = 100.0,
        logit_bias_init: float = -10.0,
        gather_distributed: bool = True,
        lock_image: bool = False,
        augment: ViewConfig = CLIP_VIEW,
        optim: OptimConfig = OptimConfig(base_lr=5e-4, weight_decay=0.2, betas=(0.9, 0.98), warmup_epochs=1),
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, optim=optim, **kwargs)
        self.save_init_args(locals())
        if loss not in ("clip", "siglip"):
            raise ValueError(f"loss must be 'clip' or 'siglip', got {loss!r}.")
        if lock_image and kwargs.get("init_from") is None:
            raise ValueError(
                "lock_image: true freezes the image tower, which would stay random: set init_from to a "
                "selfsup export or checkpoint (LiT)."
            )
        if lock_image and kwargs.get("continual_weight", 0.0) > 0:
            raise ValueError(
                "lock_image freezes the image tower: continual_weight does not apply; set it to 0."
            )
        if text_width % text_heads:
            raise ValueError(f"text_width ({text_width}) must be a multiple of text_heads ({text_heads}).")
        self.context_length = context_length
        self.image_projection = nn.Linear(self.encoder.num_features, embed_dim, bias=False)
        nn.init.normal_(self.image_projection.weight, std=self.encoder.num_features**-0.5)
        self.text = TextTransformer(
            context_length=context_length,
            vocab_size=vocab_size,
            width=text_width,
            heads=text_heads,
            layers=text_layers,
            output_dim=embed_dim,
        )
        if loss == "clip":
            self.criterion: nn.Module = CLIPLoss(
                logit_scale_init or 1 / 0.07, max_logit_scale, gather_distributed
            )
        else:
            self.criterion = SigLIPLoss(logit_scale_init or 10.0, logit_bias_init, gather_distributed)
        self.lock_image = lock_image
        if lock_image:
            self.encoder.requires_grad_(False).eval()
        self.augment_config = as_config(ViewConfig, augment)
        self.set_views([self.augment_config])

    # --- the two towers (open_clip's interface: its zero-shot builder calls encode_text) ----------

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Normalised images ``[B, 3, H, W]`` → image embeddings ``[B, embed_dim]``."""
        return self._project(self._image_features(images), normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Tokens ``[B, context_length]`` → text embeddings ``[B, embed_dim]``."""
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(
                f"tokens are {tuple(tokens.shape)} but the text tower takes [B, {self.context_length}]: set "
                f"data.init_args.context_length to model.init_args.context_length ({self.context_length})."
            )
        text = self.text(tokens)
        return F.normalize(text, dim=-1) if normalize else text

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and tokens → (image, text) embeddings, unnormalised."""
        return self.encode_image(images), self.encode_text(tokens)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict | str | Path) -> CLIP:
        """A CLIP rebuilt from its checkpoint (a path or the loaded dict), in eval mode. Its weights
        come from the checkpoint; ``init_from`` is not read again."""
        from selfsup.contract import (
            CheckpointError,
            load_checkpoint,
            model_arguments,
            model_weights,
            read_meta,
        )

        where = checkpoint if not isinstance(checkpoint, dict) else "the checkpoint"
        checkpoint = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
        method = read_meta(checkpoint).method
        if method != "clip":
            raise CheckpointError(f"'{where}' is a {method} checkpoint: this needs a selfsup.CLIP one.")
        args = model_arguments(checkpoint)
        args.update(init_from=None, init_from_file=None, lock_image=False, continual_weight=0.0)
        model = cls(**args)
        # strict=False: a continual run's frozen copy of the start is not rebuilt here
        model.load_state_dict(model_weights(checkpoint), strict=False)
        return model.eval()

    @classmethod
    def export_extra(cls, checkpoint_path: str | Path, folder: Path) -> None:
        """``selfsup export`` of a CLIP checkpoint writes, besides the image tower's timm folder,
        ``FOLDER/open_clip``: both towers, loadable by open_clip alone (``selfsup.methods.clip_export``)."""
        from selfsup.methods.clip_export import write_open_clip

        write_open_clip(cls.from_checkpoint(checkpoint_path), folder / "open_clip")

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        if self.lock_image:
            with torch.no_grad():
                return self.features(images)
        return self.features(images)

    def _project(self, features: torch.Tensor, normalize: bool) -> torch.Tensor:
        image = self.image_projection(features)
        return F.normalize(image, dim=-1) if normalize else image

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.lock_image:
            self.encoder.eval()  # LiT: a frozen tower (no dropout, no drop-path)
        return self

    # --- training ----------------------------------------------------------------------------------

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        (view,), tokens = batch
        features = self._image_features(view)
        loss = self.guard(self.criterion(self._project(features, False), self.encode_text(tokens)))
        extra = {"logit_scale": self.criterion.scale()}
        if isinstance(self.criterion, SigLIPLoss):
            extra["logit_bias"] = self.criterion.logit_bias
        self.log_step(loss, len(view), **extra)
        return {"loss": loss, "features": features.detach()}
