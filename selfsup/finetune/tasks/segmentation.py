"""Semantic segmentation: a light per-patch head upsampled to pixels, cross entropy that ignores
unlabelled pixels (255), mean IoU and a confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from selfsup.augment import CropFlipConfig, SegmentationAugment
from selfsup.finetune.tasks.base import Task
from selfsup.heads import SegmentationHead

IGNORE_INDEX = 255


class Segmentation(Task):
    """Args:
    num_classes: classes in the masks (255 marks unlabelled pixels).
    in_dim: width of the dense features.
    image_size, mean, std: the training views (the same crop and flip on images and masks).
    label_smoothing: of the cross entropy.
    augment: the crop and flip.
    """

    name = "segmentation"
    features = "dense"

    def __init__(
        self,
        num_classes: int,
        in_dim: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        label_smoothing: float = 0.0,
        augment: CropFlipConfig | None = None,
    ) -> None:
        super().__init__(num_classes)
        self.head = SegmentationHead(in_dim, num_classes)
        self.augment = SegmentationAugment(image_size, mean, std, augment)
        self.label_smoothing = label_smoothing
        self.miou = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE_INDEX, average="macro")
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
        self.last_confusion: torch.Tensor | None = None

    def train_batch(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(images, masks)

    def forward(self, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.head(features, images.shape[-2:])

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, masks, label_smoothing=self.label_smoothing, ignore_index=IGNORE_INDEX)

    def update(self, logits: torch.Tensor, masks: torch.Tensor) -> dict:
        preds = logits.argmax(1)
        self.miou.update(preds, masks)
        self.confusion.update(preds, masks)
        return {"val/loss": F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX), "val/miou": self.miou}

    def epoch_end(self) -> None:
        self.last_confusion = self.confusion.compute().cpu()
        self.confusion.reset()

    def save_pictures(self, folder: Path, classes: Sequence[str], title: str) -> list[Path]:
        if self.last_confusion is None:
            return []
        from selfsup.eval.plots import confusion_matrix_png

        return [confusion_matrix_png(self.last_confusion, classes, folder / "confusion_matrix.png", title)]
