from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from sklearn.neighbors import KNeighborsClassifier

from selfsup import MAE, ImageDataModule, SimCLR
from selfsup._lightning import RunCheckpoint
from selfsup.eval import KNNMonitor, OnlineLinearProbe
from selfsup.eval.features import extract_features


def fit(module, callbacks, tmp_path, epochs=1):
    L.seed_everything(0)
    data = ImageDataModule(image_size=16, batch_size=32, num_workers=0, train_subset=96, val_subset=64)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    return trainer


def tiny(cls):
    L.seed_everything(0)
    return cls("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 1})


def test_online_probe_loss_is_not_part_of_the_training_loss(tmp_path):
    plain = tiny(SimCLR)
    plain_trainer = fit(plain, [], tmp_path)
    probed = tiny(SimCLR)
    probe = OnlineLinearProbe()
    probed_trainer = fit(probed, [probe], tmp_path)
    # same SSL loss logged, and the encoder optimised exactly as without the probe
    assert torch.equal(
        plain_trainer.logged_metrics["train/loss_step"], probed_trainer.logged_metrics["train/loss_step"]
    )
    for (name, a), (_, b) in zip(plain.state_dict().items(), probed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # the probe itself trained and logged separately
    assert "probe/train_top1_epoch" in probed_trainer.logged_metrics
    assert not any(p is q for p in probe.head.parameters() for q in probed.parameters())
    assert probe.head.weight.grad is not None


class _Trainer:  # what the probe reads of a trainer when called directly
    datamodule = None


def _call(probe, module, features, labels):
    probe.on_train_batch_end(
        _Trainer(),
        module,
        {"features": features} if features is not None else None,
        ([module.normalize(torch.zeros(4, 3, 16, 16, dtype=torch.uint8))], labels),
        0,
    )


def test_no_gradient_reaches_the_encoder_even_from_attached_features(monkeypatch):
    module = tiny(SimCLR)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    probe = OnlineLinearProbe(num_classes=10)
    probe.setup(_Trainer(), module, "fit")
    x = module.normalize(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8))
    attached = module.features(x)  # still in the encoder's graph
    assert attached.requires_grad
    _call(probe, module, attached, torch.tensor([0, 1, 2, -1]))  # -1: unlabelled, ignored
    assert probe.head.weight.grad is not None and probe.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.parameters())
    # MAE returns no features: the probe runs its own no-grad forward of the view
    mae = tiny(MAE)
    monkeypatch.setattr(mae, "log", lambda *args, **kwargs: None)
    probe = OnlineLinearProbe(num_classes=10)
    probe.setup(_Trainer(), mae, "fit")
    _call(probe, mae, None, torch.tensor([0, 1, 2, 3]))
    assert probe.head.weight.grad is not None and all(p.grad is None for p in mae.parameters())


def test_probe_state_survives_a_save_and_restore(tmp_path, monkeypatch):
    module = tiny(SimCLR)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    probe = OnlineLinearProbe(num_classes=10)
    probe.setup(_Trainer(), module, "fit")
    with torch.no_grad():
        features = module.features(module.normalize(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)))
    for _ in range(3):
        _call(probe, module, features, torch.tensor([0, 1, 2, 3]))
    torch.save(probe.state_dict(), tmp_path / "probe.pt")
    restored = OnlineLinearProbe(num_classes=10)
    restored.load_state_dict(
        torch.load(tmp_path / "probe.pt", weights_only=True)
    )  # before setup, as on resume
    restored.setup(_Trainer(), module, "fit")
    assert torch.equal(restored.head.weight, probe.head.weight) and torch.equal(
        restored.head.bias, probe.head.bias
    )
    saved, loaded = probe.optimizer.state_dict()["state"], restored.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys() and all(
        torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved
    )
    # and both take the same next step
    _call(probe, module, features, torch.tensor([0, 1, 2, 3]))
    _call(restored, module, features, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(restored.head.weight, probe.head.weight)


def sklearn_knn_top1(module, data, k, temperature, max_train_samples):
    """kNN top-1 of ``module``'s encoder computed apart from selfsup's kNN: scikit-learn's
    neighbours by cosine distance, each voting with weight ``exp(similarity / T)``."""
    pool = module.default_pool
    bank, bank_labels = extract_features(
        module.encoder, data.eval_dataloader("train", max_samples=max_train_samples), module.normalize, pool
    )
    query, query_labels = extract_features(
        module.encoder, data.eval_dataloader("val"), module.normalize, pool
    )
    classifier = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", weights=lambda distance: np.exp((1.0 - distance) / temperature)
    )
    classifier.fit(bank.double().numpy(), bank_labels.numpy())
    return float((classifier.predict(query.double().numpy()) == query_labels.numpy()).mean())


class _RecordKNN(Callback):
    """After the monitor, at the end of every epoch: the encoder's kNN top-1 by scikit-learn."""

    def __init__(self, k, temperature, max_train_samples):
        self.k, self.temperature, self.max_train_samples = k, temperature, max_train_samples
        self.values = []

    def on_train_epoch_end(self, trainer, pl_module):
        value = sklearn_knn_top1(
            pl_module, trainer.datamodule, self.k, self.temperature, self.max_train_samples
        )
        self.values.append(value)


def test_knn_monitor_logs_the_real_knn_accuracy_and_the_best_checkpoint_is_chosen_by_it(tmp_path):
    monitor = KNNMonitor(every_n_epochs=1, k=5, temperature=0.1, max_train_samples=64)
    record = _RecordKNN(k=5, temperature=0.1, max_train_samples=64)
    checkpoint = RunCheckpoint(
        dirpath=tmp_path / "checkpoints",
        monitor="val/knn_top1",
        mode="max",
        save_top_k=1,
        save_last=True,
        filename="best-{epoch:03d}-{step:06d}",
    )
    module = tiny(SimCLR)
    L.seed_everything(0)
    data = ImageDataModule(image_size=16, batch_size=32, num_workers=0, train_subset=96, val_subset=64)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, record, checkpoint],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    # what the monitor logged each epoch is the kNN accuracy of the encoder at that epoch
    assert [epoch for epoch, _ in monitor.history] == [0, 1]
    logged = [value for _, value in monitor.history]
    assert logged == pytest.approx(record.values, abs=1e-6), (logged, record.values)
    assert float(trainer.callback_metrics["val/knn_top1"]) == pytest.approx(record.values[-1], abs=1e-6)
    # the best checkpoint is the first epoch of highest kNN accuracy, and holds that epoch's weights
    best_epoch = logged.index(max(logged)) + 1  # epochs completed
    assert best_epoch < len(logged), logged  # with this seed the best is not the latest: chosen by kNN
    best = Path(checkpoint.best_model_path)
    assert best.name == f"best-epoch={best_epoch:03d}-step={3 * best_epoch:06d}.ckpt", best.name
    assert sorted(p.name for p in best.parent.iterdir()) == sorted([best.name, "last.ckpt"])
    assert float(checkpoint.best_model_score) == pytest.approx(max(logged), abs=1e-6)
    restored = tiny(SimCLR)
    restored.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    assert sklearn_knn_top1(restored, data, 5, 0.1, 64) == pytest.approx(max(logged), abs=1e-6)
