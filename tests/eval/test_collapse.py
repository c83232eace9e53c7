"""CollapseWarning: a DINO run whose teacher is uniform warns, naming the metric, its value, log K
and what to change; a run whose teacher is not uniform, a run too early to tell and a method that
declares nothing do not."""

import math
import warnings

import lightning as L
import pytest
import torch

from selfsup import DINO, ImageDataModule
from selfsup.eval.collapse import CollapseWarning, TeacherCollapseWarning
from selfsup.lightning_cli import trainer_defaults

OUT_DIM = 64


def fit(model, epochs=3, callback=None):
    """3 epochs of 2 steps (32 digits, batch 16) with the callback; the warnings it raised."""
    L.seed_everything(0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback or CollapseWarning()],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, ImageDataModule(image_size=16, batch_size=16, num_workers=0, train_subset=32))
    return [w for w in caught if issubclass(w.category, TeacherCollapseWarning)], trainer


def dino(temperature: float) -> DINO:
    L.seed_everything(0)
    return DINO(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=4,
        encoder_kwargs={"depth": 1},
        out_dim=OUT_DIM,
        hidden_dim=32,
        bottleneck_dim=16,
        augment={"local_crops": 0},
        teacher_temperature=temperature,
        warmup_teacher_temperature=temperature,
    )


def test_a_uniform_teacher_warns_with_the_metric_the_value_the_maximum_and_the_fix():
    # a teacher temperature of 100 flattens the centred teacher to uniform: entropy = log 64
    found, trainer = fit(dino(100.0))
    value = float(trainer.callback_metrics["train/teacher_entropy"])
    assert value > 0.999 * math.log(OUT_DIM)
    assert len(found) == 1  # once per fit, not every epoch
    message = str(found[0].message)
    assert "train/teacher_entropy" in message and f"{math.log(OUT_DIM):.3f}" in message
    assert "teacher_temperature" in message and "teacher_momentum" in message
    assert f"train/teacher_entropy = {value:.3f}" in message  # log 64 = 4.159 at every epoch


def test_a_sharp_teacher_does_not_warn():
    found, trainer = fit(dino(0.001))
    assert float(trainer.callback_metrics["train/teacher_entropy"]) < 0.9 * math.log(OUT_DIM)
    assert found == []


class Logs(L.LightningModule):
    """Logs ``train/teacher_entropy`` = ``value`` every step, as DINO does, and declares its maximum."""

    def __init__(self, value: float, declare: bool = True) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.value = value
        if declare:
            self.max_entropies = {"train/teacher_entropy": math.log(OUT_DIM)}

    def training_step(self, batch, batch_idx):
        self.log("train/teacher_entropy", torch.tensor(self.value), on_step=True, on_epoch=False)
        return self.layer(torch.ones(1, 4)).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=2)  # 2 steps an epoch

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def warnings_of(model, callback=None):
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback or CollapseWarning()],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model)
    return [str(w.message) for w in caught if issubclass(w.category, TeacherCollapseWarning)]


def test_the_threshold_and_the_window():
    uniform = math.log(OUT_DIM)
    assert len(warnings_of(Logs(0.99 * uniform))) == 1
    assert warnings_of(Logs(0.97 * uniform)) == []  # below ratio 0.98
    assert len(warnings_of(Logs(0.97 * uniform), CollapseWarning(ratio=0.95))) == 1
    # epochs end at steps 2, 4 and 6 of 6: from 0 of the run the first epoch warns, from 0.9 the last
    (found,) = warnings_of(Logs(uniform), CollapseWarning(start=0.0))
    assert "at epoch 0 (step 2)" in found
    (found,) = warnings_of(Logs(uniform), CollapseWarning(start=0.9))
    assert "at epoch 2 (step 6)" in found


def test_a_method_that_declares_no_entropy_is_left_alone_and_the_cli_adds_the_callback():
    assert warnings_of(Logs(math.log(OUT_DIM), declare=False)) == []
    assert any(isinstance(c, CollapseWarning) for c in trainer_defaults()["callbacks"])
    with pytest.raises(ValueError, match="ratio"):
        CollapseWarning(ratio=0.0)
