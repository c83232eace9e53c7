"""Image classification: a linear or MLP head on pooled features, cross entropy with label
smoothing (or timm's mixup / cutmix soft targets), top-1 / top-5 and a confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from selfsup.augment import CropFlipAugment, CropFlipConfig
from selfsup.finetune.tasks.base import Task
from selfsup.heads import ClassificationHead


class Classification(Task):
    """Args:
    num_classes: classes.
    in_dim: width of the pooled features.
    image_size, mean, std: the training views (random resized crop + flip on the device).
    head: ``linear`` or ``mlp`` (``head_hidden_dim`` wide).
    mixup, cutmix: alphas of timm's Mixup (0 disables).
    label_smoothing: of the cross entropy (and of mixup's soft targets).
    augment: the crop and flip.
    """

    name = "classification"
    features = "pooled"

    def __init__(
        self,
        num_classes: int,
        in_dim: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        head: Literal["linear", "mlp"] = "linear",
        head_hidden_dim: int = 512,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        label_smoothing: float = 0.1,
        augment: CropFlipConfig | None = None,
    ) -> None:
        super().__init__(num_classes)
        self.head = ClassificationHead(in_dim, num_classes, head, head_hidden_dim)
        self.augment = CropFlipAugment(image_size, mean, std, augment or CropFlipConfig())
        self.label_smoothing = label_smoothing
        self.mixup = (
            Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            if (mixup > 0 or cutmix > 0)
            else None
        )
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.last_confusion: torch.Tensor | None = None

    def train_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.augment(images)
        if self.mixup is not None:
            if len(images) % 2:
                raise ValueError(
                    "mixup / cutmix need an even batch size: set data.batch_size to an even number."
                )
            images, targets = self.mixup(images, targets)  # soft targets [B, C]
        return images, targets

    def forward(self, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim == 2:  # soft targets from mixup / cutmix (already smoothed)
            return SoftTargetCrossEntropy()(logits, targets)
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> dict:
        self.top1.update(logits, targets)
        self.top5.update(logits, targets)
        self.confusion.update(logits.argmax(1), targets)
        return {
            "val/loss": F.cross_entropy(logits, targets),
            "val/top1": self.top1,
            "val/top5": self.top5,
        }

    def epoch_end(self) -> None:
        self.last_confusion = self.confusion.compute().cpu()
        self.confusion.reset()

    def save_pictures(self, folder: Path, classes: Sequence[str], title: str) -> list[Path]:
        if self.last_confusion is None:
            return []
        from selfsup.eval.plots import confusion_matrix_png

        return [confusion_matrix_png(self.last_confusion, classes, folder / "confusion_matrix.png", title)]

    def record(self) -> dict:
        return {**super().record(), "head": self.head.kind}
