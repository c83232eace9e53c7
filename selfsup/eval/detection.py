"""Detection evaluation: COCO mean average precision, and pictures of predicted and true boxes.

mAP is torchmetrics' ``MeanAveragePrecision`` on the ``pycocotools`` backend: the official COCO
evaluator itself (torchmetrics' default), so the numbers are the ones papers report. ``faster_coco_eval``
(a faster reimplementation of the same evaluator, also supported by torchmetrics) can be chosen where
it is installed; it matters only for evaluation sets of many thousands of images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics.detection import MeanAveragePrecision
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

Backend = Literal["pycocotools", "faster_coco_eval"]

TRUE_COLOUR = "lime"
PREDICTED_COLOUR = "red"


class DetectionMAP(MeanAveragePrecision):
    """COCO box mAP over IoU 0.50:0.95, mAP@50 and mAP@75, for xyxy pixel boxes.

    ``update(preds, targets)`` takes torchvision's lists: ``preds`` of ``{"boxes": [N, 4],
    "scores": [N], "labels": [N]}`` (a detector's eval output), ``targets`` of ``{"boxes", "labels"}``.
    ``compute()`` returns ``{"map", "map_50", "map_75"}`` (each -1 when there is no true box); for
    the other values (recalls, sizes, per class) use torchmetrics' ``MeanAveragePrecision`` itself.
    Synchronised across processes as every torchmetrics metric.

    Args:
        backend: ``"pycocotools"`` (default, the official evaluator) or ``"faster_coco_eval"``.
    """

    KEYS = ("map", "map_50", "map_75")

    def __init__(self, backend: Backend = "pycocotools") -> None:
        if backend not in ("pycocotools", "faster_coco_eval"):
            raise ValueError(f"backend must be 'pycocotools' or 'faster_coco_eval', got {backend!r}.")
        super().__init__(box_format="xyxy", iou_type="bbox", backend=backend)

    def compute(self) -> dict[str, torch.Tensor]:
        result = super().compute()
        return {key: result[key] for key in self.KEYS}


def _enlarge(image: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(image[None], scale_factor=factor, mode="nearest")[0] if factor > 1 else image


def _label(names: Sequence[str] | None, label: int) -> str:
    return names[label] if names is not None and 0 <= label < len(names) else str(label)


@torch.no_grad()
def detection_grid(
    images: torch.Tensor,
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]] | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.3,
    min_side: int = 128,
    nrow: int = 8,
) -> torch.Tensor:
    """uint8 images ``[N, 3, H, W]`` with their true boxes (green, class name) and predicted boxes
    (red, class name and score, those scoring ``>= score_threshold``) → a float ``[3, h, w]`` grid in
    [0, 1]. Images smaller than ``min_side`` are enlarged by a whole factor (nearest) so labels stay
    legible; ``nrow`` images per row, 2 px padding (``make_grid``)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}.")
    if len(predictions) != len(images) or (targets is not None and len(targets) != len(images)):
        raise ValueError(
            f"need one prediction (and target) per image: {len(images)} images, {len(predictions)} predictions, "
            f"{None if targets is None else len(targets)} targets."
        )
    factor = max(1, math.ceil(min_side / images.shape[-2]))
    width = max(1, factor // 2)
    tiles = []
    for i, image in enumerate(images.cpu()):
        tile = _enlarge(image, factor)
        if targets is not None and len(targets[i]["boxes"]):
            boxes = targets[i]["boxes"].detach().cpu().float() * factor
            names = [_label(class_names, int(c)) for c in targets[i]["labels"].cpu()]
            tile = draw_bounding_boxes(tile, boxes, names, colors=TRUE_COLOUR, width=width)
        pred = predictions[i]
        keep = pred["scores"].detach().cpu() >= score_threshold
        if keep.any():
            boxes = pred["boxes"].detach().cpu().float()[keep] * factor
            names = [
                f"{_label(class_names, int(c))} {float(s):.2f}"
                for c, s in zip(pred["labels"].cpu()[keep], pred["scores"].cpu()[keep], strict=True)
            ]
            tile = draw_bounding_boxes(tile, boxes, names, colors=PREDICTED_COLOUR, width=width)
        tiles.append(tile.float() / 255.0)
    return make_grid(torch.stack(tiles), nrow=nrow, padding=2, pad_value=1.0)


def save_detection_grid(
    images: torch.Tensor,
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]] | None,
    class_names: Sequence[str] | None,
    path: str | Path,
    score_threshold: float = 0.3,
    min_side: int = 128,
    nrow: int = 8,
) -> Path:
    """:func:`detection_grid` saved as a PNG at ``path`` (folders created); returns the path."""
    grid = detection_grid(images, predictions, targets, class_names, score_threshold, min_side, nrow)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path


class DetectionGrid(Callback):
    """Every ``every_n_epochs`` (and after the last epoch), draw the module's detections on a fixed
    set of validation images with their true boxes, as ``<log dir>/detections/epoch_<NNN>.png``, and
    send the grid to the active logger (TensorBoard ``add_image``, W&B ``log_image``).

    **Assumes** the LightningModule has ``predict_boxes(images) -> list[{"boxes", "scores", "labels"}]``
    taking uint8 ``[B, 3, S, S]`` images on its device and returning boxes in their pixels (the
    detection task's eval-mode forward); it is called in eval mode under ``torch.no_grad`` and the
    training mode is restored. Without it the callback warns and does nothing. Images come from the
    datamodule's ``val_dataloader`` (its ``train_dataloader`` when there is no validation set);
    class names from the datamodule's ``classes`` when it has them.

    Args:
        every_n_epochs: how often.
        num_images: images in the grid.
        score_threshold: predictions scoring less are not drawn.
        nrow: images per row.
    """

    def __init__(
        self, every_n_epochs: int = 1, num_images: int = 8, score_threshold: float = 0.3, nrow: int = 8
    ) -> None:
        if every_n_epochs < 1 or num_images < 1 or nrow < 1:
            raise ValueError("every_n_epochs, num_images and nrow must be >= 1.")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.score_threshold = score_threshold
        self.nrow = nrow
        self.batch: tuple[torch.Tensor, list[dict[str, torch.Tensor]]] | None = None
        self.paths: list[Path] = []

    def _fixed_batch(self, trainer: L.Trainer) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        if self.batch is None:
            datamodule = trainer.datamodule
            loader = datamodule.val_dataloader() if datamodule is not None else trainer.val_dataloaders
            if not loader:
                loader = datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader
            images, targets = [], []
            for batch_images, batch_targets in loader:
                images.append(batch_images)
                targets.extend(batch_targets)
                if len(targets) >= self.num_images:
                    break
            self.batch = (torch.cat(images)[: self.num_images].clone(), targets[: self.num_images])
        return self.batch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        if not callable(getattr(pl_module, "predict_boxes", None)):
            rank_zero_warn(
                "DetectionGrid needs a module with predict_boxes(images); skipping it for this model."
            )
            return
        images, targets = self._fixed_batch(trainer)
        # Every process runs the forward (under FSDP a forward on one process alone would hang);
        # only the first process writes.
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                predictions = pl_module.predict_boxes(images.to(pl_module.device))
        finally:
            pl_module.train(was_training)
        if not trainer.is_global_zero:
            return
        names = getattr(trainer.datamodule, "classes", None) if trainer.datamodule is not None else None
        grid = detection_grid(images, predictions, targets, names, self.score_threshold, nrow=self.nrow)
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "detections"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"epoch_{epoch:03d}.png"
        save_image(grid, path)
        self.paths.append(path)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image("detection/boxes", grid, global_step=trainer.global_step)
            elif hasattr(logger, "log_image"):  # Weights & Biases
                logger.log_image(
                    key="detection/boxes", images=[grid.permute(1, 2, 0).numpy()], step=trainer.global_step
                )
