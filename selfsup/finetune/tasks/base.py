"""What a fine-tuning task is: one small object holding the head, the loss, the training-time
augmentation and the validation metrics of a kind of label (class, mask, boxes).

``FineTune`` owns the backbone, the strategy, normalisation, the guard, the optimiser and the
checkpoint metadata; the task owns everything that depends on the labels. A new task is one file
with a :class:`Task` subclass and one line in ``TASKS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn


class Task(nn.Module):
    """Base of the fine-tuning tasks.

    Subclasses set ``name``, build ``self.head`` in ``__init__`` and implement the methods below.
    ``strategies`` lists the fine-tuning strategies that make sense for the task (None: all).
    """

    name: ClassVar[str] = ""
    strategies: ClassVar[tuple[str, ...] | None] = None
    #: the training forward needs the targets (torchvision's detectors compute their loss inside)
    needs_targets: ClassVar[bool] = False
    #: the targets stay on the host through the device transfer; ``train_batch`` / ``eval_batch``
    #: send them (detection: the boxes are augmented on the host, so reading their counts is free)
    host_targets: ClassVar[bool] = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = num_classes

    def check_strategy(self, strategy: str) -> None:
        if self.strategies is not None and strategy not in self.strategies:
            raise ValueError(
                f"the {strategy!r} strategy does not apply to {self.name}; use one of {', '.join(self.strategies)}."
            )

    # --- training ----------------------------------------------------------------------------------

    def train_batch(self, images: torch.Tensor, targets: Any) -> tuple[torch.Tensor, Any]:
        """uint8 images and their targets → the augmented, normalised training inputs and targets."""
        raise NotImplementedError

    def eval_batch(
        self, images: torch.Tensor, targets: Any, normalize: nn.Module
    ) -> tuple[torch.Tensor, Any]:
        return normalize(images), targets

    def forward(self, features: torch.Tensor, images: torch.Tensor) -> Any:
        """The head on the backbone's features (``pooled`` or ``dense`` as :attr:`features` says)."""
        raise NotImplementedError

    #: which backbone output the head reads: ``pooled`` ([B, D]), ``dense`` ([B, D, h, w]), or
    #: ``images`` (the head runs the backbone itself: detection's feature pyramid)
    features: ClassVar[str] = "pooled"

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        raise NotImplementedError

    def train_logs(self, outputs: Any) -> dict[str, torch.Tensor]:
        """Further values to log at each training step (device tensors: no sync), e.g. loss terms."""
        return {}

    # --- validation --------------------------------------------------------------------------------

    def update(self, outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        """Accumulate validation metrics; returns the values to log (tensors or torchmetrics)."""
        raise NotImplementedError

    def epoch_end(self) -> dict[str, torch.Tensor] | None:
        """After a validation epoch; may return values to log (metrics computed once per epoch)."""

    def save_pictures(self, folder: Path, classes: Sequence[str], title: str) -> list[Path]:
        """Pictures of the last validation epoch, under ``folder``."""
        return []

    # --- record ------------------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """What the checkpoint records of the task (besides the strategy)."""
        return {"name": self.name, "num_classes": self.num_classes}
