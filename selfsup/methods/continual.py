"""Continual pretraining (``init_from`` + ``continual_weight``), kept out of the methods.

:class:`ContinualDistillation` is a mixin of :class:`~selfsup.methods.base.PretrainModule`. With
``continual_weight > 0`` it keeps a frozen copy of the starting encoder (``start_encoder``, a
distillation teacher, CaSSLe: Fini et al. 2022) and a predictor (``continual_predictor``), takes the
first view of every training batch as it reaches the step (``on_train_batch_start``), and adds
``continual_weight * (2 - 2 cos(predictor(student features), start features))`` on that view to the
loss the method hands to :meth:`guard`, logging the term as ``train/continual_distill``. A method
calls ``self.guard(loss)`` as it always does and never sees any of this.

The two modules are attributes of the method, so a continual run's state dict holds
``start_encoder.*`` and ``continual_predictor.*`` (a resume rebuilds and reloads them).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from selfsup.encoders import pooled_features


class ContinualDistillation:
    """Mixin of :class:`~selfsup.methods.base.PretrainModule` (placed before ``SelfSupModule``, whose
    ``guard`` registers the loss with the non-finite guard): the continual-distillation term.

    The host class provides ``encoder``, ``default_pool`` and ``log`` (a LightningModule's)."""

    continual_weight: float = 0.0

    def init_continual(
        self, init_from: str | None, continual_weight: float, init_from_file: str | None = None
    ) -> None:
        """Start ``self.encoder`` from ``init_from`` (its backbone's weights only) and, with
        ``continual_weight > 0``, freeze a copy of it as the teacher and build the predictor."""
        if init_from_file is not None and init_from is None:
            raise ValueError(
                "init_from_file is the weights file of the timm name in init_from: set init_from too."
            )
        if init_from is not None:
            load_start_weights(self.encoder, init_from, init_from_file)
        if continual_weight < 0 or (continual_weight > 0 and init_from is None):
            raise ValueError(
                f"continual_weight={continual_weight}: it must be >= 0, and > 0 only with init_from (the "
                "encoder whose knowledge it keeps)."
            )
        self.continual_weight = continual_weight
        self._step_views: list[torch.Tensor] | None = None  # this step's views, for the term
        if continual_weight > 0:
            self.start_encoder = copy.deepcopy(self.encoder).requires_grad_(False).eval()
            dim = self.encoder.num_features
            self.continual_predictor = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if self.continual_weight > 0:
            self._step_views = batch[0]  # the views on_after_batch_transfer made, as the step gets them

    def guard(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` plus the continual term when ``continual_weight > 0``, on the first view of this
        step's batch, then registered with the non-finite guard."""
        if self.continual_weight > 0:
            views, self._step_views = self._step_views, None
            if views is None:
                raise RuntimeError(
                    f"{type(self).__name__}: continual_weight > 0 needs the step's views, and no training batch "
                    "reached this step: run the step through a Trainer (or call on_train_batch_start(batch, 0) "
                    "before training_step)."
                )
            view = views[0] if isinstance(views, (list, tuple)) else views
            loss = loss + self.continual_weight * self.continual_term(view)
        return super().guard(loss)

    def continual_term(self, view: torch.Tensor) -> torch.Tensor:
        """``2 - 2 cos(predictor(student features), start features)``, averaged over ``view``; logged
        as ``train/continual_distill`` (a device tensor: no host sync)."""
        with torch.no_grad():
            target = pooled_features(self.start_encoder, view, self.default_pool)
        pred = self.continual_predictor(pooled_features(self.encoder, view, self.default_pool))
        term = 2 - 2 * torch.nn.functional.cosine_similarity(pred, target.to(pred.dtype), dim=-1).mean()
        self.log("train/continual_distill", term.detach(), on_step=True, on_epoch=True, batch_size=len(view))
        return term

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.continual_weight > 0:
            self.start_encoder.eval()  # a frozen teacher: no dropout, no drop-path
        return self


def load_start_weights(encoder: nn.Module, source: str, file: str | None = None) -> None:
    """Continual pretraining: copy the backbone weights of ``source`` (any source of
    :func:`selfsup.load.load_encoder`; ``file``: the weights of a timm name) into ``encoder``
    (nothing else: no optimiser state, no step). A timm name is built at the run's image size (timm
    resamples the position embedding) with the run's encoder arguments."""
    from selfsup.contract import CheckpointError, ModelSpec
    from selfsup.load import load_encoder, names_a_model

    want = ModelSpec.from_model(encoder)
    if names_a_model(source):
        build = {"img_size": want.img_size, "patch_size": want.patch_size, **want.model_args}
        start = load_encoder(source, pretrained=True, pretrained_file=file, **build)
    else:
        start = load_encoder(source)
    have = ModelSpec.from_model(start)
    try:
        encoder.load_state_dict(start.state_dict())
    except RuntimeError as err:
        raise CheckpointError(
            f"init_from '{source}' holds a {have.describe()} encoder with {dict(have.model_args)}, but this run builds "
            f"{want.describe()} with {dict(want.model_args)}: set model.init_args.encoder, patch_size and "
            f"encoder_kwargs to match it ({str(err).splitlines()[0]})."
        ) from None
