import lightning as L
import torch

from selfsup import MAE, ImageDataModule, SimCLR
from selfsup.eval import KNNMonitor, OnlineLinearProbe


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
    state = probe.state_dict()
    restored = OnlineLinearProbe()
    restored.load_state_dict(state)
    assert restored._pending_state is state


def test_online_probe_on_mae_uses_a_no_grad_forward(tmp_path):
    module = tiny(MAE)
    trainer = fit(module, [OnlineLinearProbe(num_classes=10)], tmp_path)
    assert 0.0 <= float(trainer.logged_metrics["probe/train_top1_epoch"]) <= 1.0


def test_knn_monitor_logs_a_checkpointable_metric(tmp_path):
    monitor = KNNMonitor(every_n_epochs=1, k=5, max_train_samples=64)
    trainer = fit(tiny(SimCLR), [monitor], tmp_path, epochs=2)
    assert [epoch for epoch, _ in monitor.history] == [0, 1]
    assert all(0.0 <= value <= 1.0 for _, value in monitor.history)
    assert "val/knn_top1" in trainer.callback_metrics
