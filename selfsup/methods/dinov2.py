"""DINOv2 (Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision",
sec. 4): DINO's self-distillation on the class tokens of multi-crop views, iBOT's masked-patch
self-distillation on the global crops (the student sees a learned mask token in place of masked
patches, the teacher the whole crop), and the KoLeo regulariser on the student's class tokens; a
momentum teacher, centred by an EMA or by Sinkhorn-Knopp.

Followed: facebookresearch/dinov2 ``dinov2/train/ssl_meta_arch.py`` (``forward_backward``: which
tokens reach which head, the loss terms and their scales, KoLeo per global crop, the teacher seeing
the full crops; ``get_params_groups``: layer-wise decay and the patch embedding's multiplier, here
``selfsup.optim`` through ``OptimConfig``), ``dinov2/train/train.py`` (the schedules, per-module
gradient clipping, the last layers frozen during the first epoch), ``dinov2/models/vision_transformer.py``
(``prepare_tokens_with_masks``: ``torch.where`` of the mask token before the position embedding),
``dinov2/loss/*`` (``selfsup.losses.DINOLoss``, ``IBOTPatchLoss``, ``KoLeoLoss``,
``sinkhorn_knopp``), ``dinov2/data/masking.py`` and ``collate.py`` (``selfsup.encoders.block_masking``)
and ``dinov2/configs/ssl_default_config.yaml`` (the defaults).
Optional (``gram_weight``): DINOv3's Gram anchoring, facebookresearch/dinov3 ``dinov3/loss/gram_loss.py``
(``selfsup.losses.GramLoss``), ``dinov3/train/ssl_meta_arch.py`` (the student's patch tokens of the
global crops against a Gram teacher's: the EMA teacher, ``gram.ema_teacher``, or a frozen copy of it,
``gram_load_ema_teacher`` and ``update_gram``) and ``dinov3/train/train.py`` (the copy taken at one
iteration, then refreshed every ``update_frequency`` iterations, at most ``max_updates`` times).

Departures: the encoder is timm's ``VisionTransformer`` (register tokens ``reg_tokens``, layer scale
``init_values``; timm's drop-path rate grows with depth where dinov2's ``drop_path_uniform`` keeps it
constant); the learning rate scales linearly with the batch (``base_lr`` per 256 images; dinov2
scales 4e-3 per 1024 images by the square root); the teacher temperature warms up per epoch (as
DINO here) rather than per iteration; position embeddings, class, register and mask tokens get no
weight decay (selfsup's rule; dinov2 decays all but biases, norms and layer scales); the last layers'
gradients are dropped during the frozen epoch (DINO's way) where dinov2 sets their learning rate to 0.
The Gram teacher sees the student's global crops (dinov3 gives it crops of its own, at a higher
resolution, and resizes its patch features to the student's grid); the Gram term is off before
``gram_start_step`` (dinov3 reaches that with a weight schedule or by starting from a checkpoint).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from selfsup.contract import as_config
from selfsup.encoders.block_masking import ibot_masks
from selfsup.heads.dino import DINOHead
from selfsup.losses.gram import GramLoss
from selfsup.losses.ibot import IBOTPatchLoss, patch_weights
from selfsup.losses.koleo import KoLeoLoss
from selfsup.losses.sinkhorn import sinkhorn_knopp
from selfsup.methods.base import DEFAULT_ENCODER
from selfsup.methods.dino import DINO, DINOViews
from selfsup.optim import OptimConfig

# dinov2 DataAugmentationDINO with the default config's crops: DINO's colour, blur and solarize,
# global crops of 32-100 % of the image, 8 local crops of 5-32 %
DINOV2_VIEWS = DINOViews(global_scale=(0.32, 1.0), local_scale=(0.05, 0.32), local_crops=8)


class DINOv2(DINO):
    """DINOv2 pretraining of a ViT (a :class:`~selfsup.methods.dino.DINO` with iBOT and KoLeo).

    Args:
        encoder: the student's encoder (see ``PretrainModule``). ``encoder_kwargs`` takes timm's
            ``reg_tokens`` (4 for DINOv2 with registers), ``init_values`` (layer scale, 1e-5) and
            ``drop_path_rate`` (the student's only: the teacher runs in eval mode).
        out_dim, hidden_dim, bottleneck_dim, head_layers, norm_last_layer, use_bn_in_head: the DINO
            head on the class tokens (dinov2: 65536 prototypes, its last layer's norm trainable).
        separate_head: give the patch tokens their own head (``ibot_*``); False shares the DINO head.
        ibot_out_dim, ibot_hidden_dim, ibot_bottleneck_dim, ibot_head_layers: that head.
        dino_weight, ibot_weight, koleo_weight: the loss terms' weights (1, 1, 0.1; 0 turns a term off
            except DINO's, whose head the teacher always runs).
        mask_probability, mask_ratio: the share of global crops that are masked (0.5) and the range of
            their masked share of patches ((0.1, 0.5)), block-wise (``ibot_masks``).
        mask_min_patches, mask_min_aspect: the smallest block and its aspect range (4, 0.3).
        centering: the teacher's ``softmax`` centring (an EMA of its outputs, as DINO) or ``sinkhorn``
            (Sinkhorn-Knopp, 3 iterations over the batch of every process), for both heads.
        gram_weight: DINOv3's Gram anchoring (``selfsup.losses.GramLoss``): this weight times the
            mean squared difference between the student's and the Gram teacher's patch-similarity
            matrices of each global crop (0: off, the default). The matrices are per image
            (dinov3's ``img_level``, as its Gram-anchoring configs; its default is one over the batch).
        gram_teacher: ``ema``: the EMA teacher itself (dinov3's ``gram.ema_teacher``); ``snapshot``:
            a frozen copy of the EMA teacher's encoder taken at ``gram_start_step`` (an earlier
            teacher, as DINOv3's Gram anchoring), saved in checkpoints, never exported.
        gram_start_step: the optimiser step from which the Gram term counts (and, for ``snapshot``,
            at which the copy is taken); 0: from the first.
        gram_refresh_every: for ``snapshot``, copy the EMA teacher again every this many steps after
            ``gram_start_step`` (dinov3's ``update_frequency``; 0: never).
        gram_max_refreshes: at most this many refreshes after the first copy (``max_updates``;
            None: no limit).
        teacher_momentum: the EMA momentum at the first step (0.992), a cosine to 1 at the last.
        teacher_temperature, warmup_teacher_temperature, warmup_teacher_temperature_epochs,
            student_temperature, center_momentum: as DINO (0.07, from 0.04 over 30 epochs; 0.1; 0.9).
        freeze_last_layer: epochs during which both heads' last layers get no update (1).
        clip_grad: the gradient norm of each student module (encoder with the mask token, DINO head,
            iBOT head), clipped on its own as dinov2's per-module ``clip_grad_norm_`` (3.0; 0: off).
        augment: the multi-crop views (DINO's, with dinov2's crop scales).
        optim: AdamW at base lr 1e-3 per 256 images (dinov2's 4e-3 at 1024), 10 warm-up epochs, cosine
            to 1e-6 / 4e-3 of the peak; weight decay cosine from 0.04 to 0.4; layer-wise decay 0.9 and
            a patch-embedding multiplier of 0.2.
    """

    method = "dinov2"
    summary = "DINO on class tokens + iBOT on masked patches + KoLeo, momentum teacher"
    pooling = "token"

    def __init__(
        self,
        encoder: str | nn.Module = DEFAULT_ENCODER,
        *,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        head_layers: int = 3,
        norm_last_layer: bool = False,
        use_bn_in_head: bool = False,
        separate_head: bool = False,
        ibot_out_dim: int = 65536,
        ibot_hidden_dim: int = 2048,
        ibot_bottleneck_dim: int = 256,
        ibot_head_layers: int = 3,
        dino_weight: float = 1.0,
        ibot_weight: float = 1.0,
        koleo_weight: float = 0.1,
        mask_probability: float = 0.5,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_min_patches: int = 4,
        mask_min_aspect: float = 0.3,
        centering: Literal["softmax", "sinkhorn"] = "softmax",
        gram_weight: float = 0.0,
        gram_teacher: Literal["ema", "snapshot"] = "ema",
        gram_start_step: int = 0,
        gram_refresh_every: int = 0,
        gram_max_refreshes: int | None = None,
        teacher_momentum: float = 0.992,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        warmup_teacher_temperature_epochs: int = 30,
        student_temperature: float = 0.1,
        center_momentum: float = 0.9,
        freeze_last_layer: int = 1,
        clip_grad: float = 3.0,
        augment: DINOViews = DINOV2_VIEWS,
        optim: OptimConfig = OptimConfig(
            base_lr=1e-3,
            weight_decay=0.04,
            weight_decay_end=0.4,
            warmup_epochs=10,
            min_lr_ratio=2.5e-4,
            layer_decay=0.9,
            patch_embed_lr_mult=0.2,
        ),
        **kwargs: Any,
    ) -> None:
        init_args = dict(locals())
        if centering not in ("softmax", "sinkhorn"):
            raise ValueError(f"centering must be 'softmax' or 'sinkhorn', got {centering!r}.")
        if min(dino_weight, ibot_weight, koleo_weight, gram_weight) < 0:
            raise ValueError(
                f"loss weights must be >= 0, got {dino_weight}, {ibot_weight}, {koleo_weight}, {gram_weight}."
            )
        check_gram_arguments(
            gram_weight, gram_teacher, gram_start_step, gram_refresh_every, gram_max_refreshes
        )
        views = as_config(DINOViews, augment)
        super().__init__(
            encoder, out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
            head_layers=head_layers, norm_last_layer=norm_last_layer, use_bn_in_head=use_bn_in_head,
            teacher_momentum=teacher_momentum, teacher_temperature=teacher_temperature,
            warmup_teacher_temperature=warmup_teacher_temperature,
            warmup_teacher_temperature_epochs=warmup_teacher_temperature_epochs,
            student_temperature=student_temperature, center_momentum=center_momentum,
            freeze_last_layer=freeze_last_layer, clip_grad=0.0, augment=views, optim=optim, **kwargs,
        )  # fmt: skip
        self.save_init_args(init_args)
        if clip_grad < 0:
            raise ValueError(f"clip_grad must be >= 0 (3.0 in DINOv2; 0: off), got {clip_grad}.")
        self.module_clip_grad = float(clip_grad)  # DINO's per-parameter clipping is off (clip_grad=0 above)
        self.mask_token = nn.Parameter(torch.zeros(1, self.encoder.embed_dim))  # dinov2: zeros
        self.ibot_head: DINOHead | None = None
        if separate_head:
            self.ibot_head = DINOHead(self.encoder.num_features, ibot_out_dim, ibot_hidden_dim,
                                      ibot_bottleneck_dim, ibot_head_layers, use_bn_in_head, norm_last_layer)  # fmt: skip
            self.add_momentum_teacher("ibot_head", "teacher_ibot_head", teacher_momentum)
        self.ibot_criterion = IBOTPatchLoss(ibot_out_dim if separate_head else out_dim, student_temperature,
                                            center_momentum)  # fmt: skip
        self.koleo = KoLeoLoss()
        self.gram = GramLoss()
        self.weights = (float(dino_weight), float(ibot_weight), float(koleo_weight))
        self.gram_weight = float(gram_weight)
        self.gram_schedule = (int(gram_start_step), int(gram_refresh_every), gram_max_refreshes)
        self.gram_encoder: nn.Module | None = None
        if gram_weight > 0 and gram_teacher == "snapshot":
            self.gram_encoder = copy.deepcopy(self.teacher_encoder).requires_grad_(False)
        # with the iBOT term off no crop is masked (dinov2's do_ibot = False)
        self.mask_config = (float(mask_probability) if ibot_weight > 0 else 0.0,
                            (float(mask_ratio[0]), float(mask_ratio[1])), int(mask_min_patches),
                            float(mask_min_aspect))  # fmt: skip
        self.centering = centering
        ibot_masks(2, self.patch_grid(), *self.mask_config)  # fail at construction on bad mask arguments

    # --- declarations ------------------------------------------------------------------------------

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.ibot_head is not None:
            self.teacher_ibot_head.train(self.use_bn_in_head)  # batch statistics, as DINO's teacher head
        if mode and self.gram_encoder is not None:
            self.gram_encoder.eval()
        return self

    def no_weight_decay_names(self) -> set[str]:
        return super().no_weight_decay_names() | {"mask_token"}

    def patch_grid(self) -> tuple[int, int]:
        """The global crops' grid of patches."""
        size = self.views[0].size
        patch = self.encoder.patch_embed.patch_size
        return (size // patch[0], size // patch[1])

    # --- the step ----------------------------------------------------------------------------------

    def masked_forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The student's tokens ``[N, prefix + L, D]`` after the final norm, with the mask token in
        place of the patch embeddings where ``masks`` ``[N, L]`` is True: timm's ``forward_features``
        with ``torch.where`` between the patch embedding and ``_pos_embed`` (dinov2's
        ``prepare_tokens_with_masks``), so masked patches keep their position embedding."""
        encoder = self.encoder
        x = encoder.patch_embed(images)  # [N, h, w, D] with dynamic_img_size, else [N, L, D]
        x = torch.where(masks.view(*x.shape[:-1], 1), self.mask_token.to(x.dtype), x)
        x = encoder.patch_drop(encoder._pos_embed(x))
        return encoder.norm(encoder.blocks(encoder.norm_pre(x)))

    def draw_masks(self, num_images: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The global crops' masks ``[N, L]``, the flat indices of their masked patches ``[M]`` and
        each one's weight ``1 / M_n`` ``[M]``: drawn and indexed on the CPU (the reference's collate),
        then copied to ``device`` without a sync (pinned where it is a GPU)."""
        masks = ibot_masks(num_images, self.patch_grid(), *self.mask_config)
        index = masks.flatten().nonzero().squeeze(1)
        weights = patch_weights(masks)
        pin = device.type == "cuda"
        return tuple(
            (t.pin_memory() if pin else t).to(device, non_blocking=True) for t in (masks, index, weights)
        )

    def training_step(self, batch: tuple, batch_idx: int) -> dict[str, torch.Tensor]:
        views, _ = batch
        batch_size = len(views[0])
        global_crops = torch.cat(views[:2])
        masks, index, weights = self.draw_masks(len(global_crops), global_crops.device)
        shared = self.ibot_head is None
        prefix = self.encoder.num_prefix_tokens
        with torch.no_grad():  # the teacher sees the full global crops
            t_tokens = self.teacher_encoder.forward_features(global_crops)
            t_cls, t_patches = t_tokens[:, 0], t_tokens[:, prefix:].flatten(0, 1).index_select(0, index)
            if shared:
                t_cls_out, t_patch_out = self.teacher_head(torch.cat([t_cls, t_patches])).split(
                    [len(t_cls), len(t_patches)]
                )
            else:
                t_cls_out, t_patch_out = self.teacher_head(t_cls), self.teacher_ibot_head(t_patches)
        tokens = self.masked_forward(global_crops, masks)
        s_cls = tokens[:, 0]
        s_patches = tokens[:, prefix:].flatten(0, 1).index_select(0, index)
        cls_tokens = [s_cls]
        if len(views) > 2:  # the local crops, unmasked, in one pass
            cls_tokens.append(self.encoder.forward_features(torch.cat(views[2:]))[:, 0])
        cls_tokens = torch.cat(cls_tokens)
        if shared:
            s_cls_out, s_patch_out = self.head(torch.cat([cls_tokens, s_patches])).split(
                [len(cls_tokens), len(s_patches)]
            )
        else:
            s_cls_out, s_patch_out = self.head(cls_tokens), self.ibot_head(s_patches)

        temperature = self.teacher_temperature(self.current_epoch)
        if self.centering == "softmax":
            t_cls_probs = torch.softmax((t_cls_out.float() - self.criterion.center) / temperature, dim=-1)
            dino = self.criterion(s_cls_out, t_cls_out, temperature)
        else:  # DINOLoss with its centre left at 0 takes log-probabilities at temperature 1: softmax(log q) = q
            t_cls_probs = sinkhorn_knopp(t_cls_out, temperature)
            dino = self.criterion(s_cls_out, t_cls_probs.clamp_min(1e-30).log(), 1.0)
        t_patch_probs = self.ibot_criterion.teacher_probabilities(t_patch_out, temperature, self.centering)
        ibot = self.ibot_criterion(s_patch_out, t_patch_probs, masks, weights)
        dino_weight, ibot_weight, koleo_weight = self.weights
        koleo = sum(self.koleo(crop) for crop in s_cls.chunk(2)) if koleo_weight > 0 else s_cls.new_zeros(())
        loss = dino_weight * dino + ibot_weight * ibot + koleo_weight * koleo
        extra = {}
        if self.gram_weight > 0 and self.global_step >= self.gram_schedule[0]:
            extra["gram_loss"] = self.gram(
                tokens[:, prefix:], self.gram_targets(global_crops, t_tokens)[:, prefix:]
            )
            loss = loss + self.gram_weight * extra["gram_loss"]
        loss = self.guard(loss)
        if self.centering == "softmax":
            self.criterion.update_center(t_cls_out)
            self.ibot_criterion.update_center(t_patch_out)
        with torch.no_grad():
            entropy = -(t_cls_probs * t_cls_probs.clamp_min(1e-12).log()).sum(-1).mean()
        self.log_step(
            loss,
            batch_size,
            dino_loss=dino,
            ibot_loss=ibot,
            koleo_loss=koleo,
            teacher_entropy=entropy,
            teacher_temperature=temperature,
            teacher_momentum=self.teacher_momentum(self.global_step),
            masked_patches=torch.tensor(float(len(index)) / masks.numel()),
            **extra,
        )
        return {"loss": loss}

    # --- Gram anchoring ----------------------------------------------------------------------------

    def gram_refresh_due(self, step: int) -> bool:
        """Whether the snapshot Gram teacher is (re)taken before optimiser step ``step``: at
        ``gram_start_step``, then every ``gram_refresh_every`` steps, at most ``gram_max_refreshes``
        times (host integers: no device sync)."""
        start, every, most = self.gram_schedule
        since = step - start
        if since == 0:
            return True
        if since < 0 or every <= 0 or since % every:
            return False
        return most is None or since // every <= most

    @torch.no_grad()
    def gram_targets(self, global_crops: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
        """The Gram teacher's tokens of the global crops: the EMA teacher's (already computed), or
        the snapshot's, which is first copied from the EMA teacher when :meth:`gram_refresh_due`."""
        if self.gram_encoder is None:
            return teacher_tokens
        if self.gram_refresh_due(self.global_step):
            # parameters and buffers one by one (as the EMA update): under FSDP each process copies
            # its own shard, where a state_dict would gather whole tensors
            pairs = zip(
                [*self.gram_encoder.parameters(), *self.gram_encoder.buffers()],
                [*self.teacher_encoder.parameters(), *self.teacher_encoder.buffers()],
                strict=True,
            )
            for target, source in pairs:
                target.copy_(source)
            rank_zero_info(f"Gram anchoring: the Gram teacher is the EMA teacher of step {self.global_step}.")
        return self.gram_encoder.forward_features(global_crops)

    def clip_gradients_per_module(self) -> None:
        """dinov2's clipping: each student module's gradient (the encoder with the mask token, the
        DINO head, the iBOT head) scaled to norm at most ``clip_grad`` on its own (DINO clips each
        parameter's); on the device, no host sync."""
        groups = [[*self.encoder.parameters(), self.mask_token], list(self.head.parameters())]
        if self.ibot_head is not None:
            groups.append(list(self.ibot_head.parameters()))
        for params in groups:
            grads = [p for p in params if p.grad is not None]
            if grads:
                torch.nn.utils.clip_grad_norm_(grads, self.module_clip_grad)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # clip each module, freeze the iBOT head's last layer in the first freeze_last_layer epochs;
        # DINO's hook then freezes the DINO head's (its own clipping is off) and runs the guard
        if self.module_clip_grad > 0:
            self.clip_gradients_per_module()
        if self.current_epoch < self.freeze_last_layer and self.ibot_head is not None:
            for p in self.ibot_head.last_layer_parameters():
                p.grad = None
        super().on_before_optimizer_step(optimizer)


def check_gram_arguments(weight: float, teacher: str, start: int, every: int, most: int | None) -> None:
    """Clear errors for Gram-anchoring arguments that would be ignored or cannot work."""
    if teacher not in ("ema", "snapshot"):
        raise ValueError(f"gram_teacher must be 'ema' or 'snapshot', got {teacher!r}.")
    if start < 0 or every < 0 or (most is not None and most < 0):
        raise ValueError(
            f"gram_start_step, gram_refresh_every and gram_max_refreshes must be >= 0, got {start}, {every}, {most}."
        )
    if weight == 0 and (teacher == "snapshot" or start or every):
        raise ValueError(
            "the Gram teacher's settings (gram_teacher, gram_start_step, gram_refresh_every) take effect only "
            "with Gram anchoring on: set gram_weight > 0 (DINOv3 uses 1.0), or leave them at their defaults."
        )
    if every and teacher != "snapshot":
        raise ValueError(
            "gram_refresh_every refreshes a snapshot Gram teacher: set gram_teacher: snapshot (the EMA "
            "teacher needs no refresh)."
        )
