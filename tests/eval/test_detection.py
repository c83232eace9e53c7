"""Detection mAP (closed forms) and the pictures of boxes."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data.detection import DetectionDataModule
from selfsup.data.synthetic_detection import make_detection_set
from selfsup.eval.detection import DetectionGrid, DetectionMAP, save_detection_grid


def _truth():
    return [
        {
            "boxes": torch.tensor([[2.0, 3.0, 20.0, 25.0], [30.0, 30.0, 60.0, 50.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[0.0, 0.0, 64.0, 64.0]]), "labels": torch.tensor([1])},
    ]


def test_ground_truth_as_predictions_scores_one():
    metric = DetectionMAP()
    truth = _truth()
    metric.update([{**t, "scores": torch.ones(len(t["labels"]))} for t in truth], truth)
    result = metric.compute()
    assert set(result) == {"map", "map_50", "map_75"}
    for value in result.values():
        assert value.item() == pytest.approx(1.0)


def test_one_box_at_iou_062_scores_the_closed_form():
    """IoU 0.62 passes the thresholds 0.50, 0.55, 0.60 of the ten: mAP = 3/10, mAP@50 = 1, mAP@75 = 0."""
    metric = DetectionMAP()
    truth = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])}]
    metric.update(
        [
            {
                "boxes": torch.tensor([[0.0, 0.0, 10.0, 6.2]]),
                "scores": torch.tensor([0.9]),
                "labels": torch.tensor([0]),
            }
        ],
        truth,
    )
    result = metric.compute()
    assert result["map"].item() == pytest.approx(0.3)
    assert result["map_50"].item() == pytest.approx(1.0)
    assert result["map_75"].item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="backend"):
        DetectionMAP(backend="coco")


def test_grid_png_has_the_expected_size_and_colours(tmp_path):
    images = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    targets = [{"boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0]]), "labels": torch.tensor([1])}] * 3
    predictions = [
        {
            "boxes": torch.tensor([[10.0, 4.0, 30.0, 30.0]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([0]),
        },
        {
            "boxes": torch.tensor([[10.0, 4.0, 30.0, 30.0]]),
            "scores": torch.tensor([0.1]),
            "labels": torch.tensor([0]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    path = save_detection_grid(
        images, predictions, targets, ["cat", "dog"], tmp_path / "g" / "grid.png", 0.3, min_side=64, nrow=2
    )
    grid = np.asarray(Image.open(path).convert("RGB"))
    assert grid.shape == (2 * (64 + 2) + 2, 2 * (64 + 2) + 2, 3)  # tiles enlarged 2x, 2 per row, 2 px padding

    def tile(i: int) -> np.ndarray:  # the i-th 64-px tile of the grid
        top, left = 2 + (i // 2) * 66, 2 + (i % 2) * 66
        return grid[top : top + 64, left : left + 64]

    assert tuple(tile(0)[30, 4]) == (0, 255, 0)  # the true box's left edge (x = 2 * 2), green
    assert tuple(tile(0)[30, 60]) == (255, 0, 0)  # the prediction's right edge (x = 30 * 2), red
    assert tuple(tile(1)[30, 60]) == (0, 0, 0)  # a score under the threshold is not drawn
    with pytest.raises(ValueError, match="one prediction"):
        save_detection_grid(images, predictions[:2], targets, None, tmp_path / "x.png")


class Boxes(L.LightningModule):
    """A stand-in with the detection task's ``predict_boxes`` contract."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[bool, torch.dtype]] = []

    def predict_boxes(self, images):
        self.calls.append((self.training, images.dtype))
        return [
            {
                "boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]),
                "scores": torch.tensor([0.8]),
                "labels": torch.tensor([0]),
            }
            for _ in images
        ]

    def training_step(self, batch, batch_idx):
        return (self.weight - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_detection_grid_callback_saves_a_png_per_epoch(tmp_path):
    root = make_detection_set(tmp_path / "data", 10, canvas=32, source="digits", classes=["0", "1"])
    data = DetectionDataModule(str(root), image_size=32, batch_size=4, num_workers=0, val_fraction=0.5)
    callback = DetectionGrid(every_n_epochs=2, num_images=6, nrow=3)
    module = Boxes()
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    trainer.fit(module, datamodule=data)
    assert [p.name for p in callback.paths] == ["epoch_001.png", "epoch_002.png"]  # every 2nd, and the last
    assert callback.paths[0].parent == tmp_path / "detections"
    assert module.calls == [(False, torch.uint8)] * 2 and module.training
    side = 32 * 4  # enlarged to at least 128 px
    assert Image.open(callback.paths[0]).size == (3 * (side + 2) + 2, 2 * (side + 2) + 2)
