"""SwAV as a method: multi-crop through one encoder, normalised and frozen prototypes, the queue,
learning on the digits, the CLI and the export. The loss has its own tests
(tests/losses/test_swav.py), the codes theirs (Sinkhorn-Knopp)."""

import lightning as L
import pytest
import torch

from selfsup import SwAV
from tests.method_helpers import check_cli_and_export, digits_run

TINY = {"img_size": 16, "patch_size": 4, "encoder_kwargs": {"depth": 1}}
SMALL = {"projection_hidden_dim": 32, "projection_dim": 16, "num_prototypes": 10}
PLAIN = {"global_scale": (0.3, 1.0), "local_scale": (0.1, 0.3), "local_crops": 2, "local_size": 8, "hflip_prob": 0.0,
         "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0}  # fmt: skip


def steps(model, count: int, epoch: int = 0, batch: int = 4) -> list[torch.Tensor]:
    """``count`` training steps outside a Trainer (the hooks that a Trainer calls around them, in order)."""
    model.log = lambda *args, **kwargs: None
    model.trainer = L.Trainer(accelerator="cpu", logger=False)
    model.trainer.fit_loop.epoch_progress.current.completed = epoch  # current_epoch
    images = torch.randint(0, 256, (batch, 3, 16, 16), dtype=torch.uint8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(count):
        model.on_train_batch_start(None, 0)
        loss = model.training_step((model.augment(images), torch.zeros(batch)), 0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        model.nonfinite_guard.check = lambda *args: None  # no Trainer-driven guard outside a fit
        model.on_before_optimizer_step(optimizer)
        optimizer.step()
        losses.append(loss.detach())
    return losses


def test_multi_crop_prototypes_frozen_in_the_first_epochs_then_trained_and_kept_unit():
    model = SwAV("vit_tiny_patch16_224", **TINY, **SMALL, augment=PLAIN, freeze_prototypes_epochs=1)
    assert [v.size for v in model.views] == [16, 16, 8, 8] and model.backbone is model.encoder
    before = model.prototypes.layer.weight.detach().clone()
    steps(model, 2, epoch=0)
    torch.testing.assert_close(model.prototypes.layer.weight, before)  # frozen in epoch 0
    assert any(p.grad is not None for p in model.projector.parameters())
    steps(model, 2, epoch=1)
    assert not torch.allclose(model.prototypes.layer.weight, before)
    model.on_train_batch_start(None, 0)  # renormalised before every step
    torch.testing.assert_close(model.prototypes.layer.weight.norm(dim=1), torch.ones(10))


def test_the_queue_fills_from_its_epoch_and_joins_once_full():
    model = SwAV("vit_tiny_patch16_224", **TINY, **SMALL, augment=PLAIN, queue_length=8, queue_start_epoch=1)
    steps(model, 1, epoch=0)
    assert model.queue is None  # not before queue_start_epoch
    steps(model, 1, epoch=1)
    assert model.queue.shape == (2, 8, 16) and not model.queue_in_use()
    filled = model.queue[:, :4].clone()
    assert filled.norm(dim=-1).sub(1).abs().max() < 1e-5 and model.queue[:, 4:].abs().sum() == 0
    steps(model, 1, epoch=1)
    assert model.queue_in_use()  # 8 rows: the next step's codes use them
    with pytest.raises(ValueError, match="multiple of"):
        steps(
            SwAV("vit_tiny_patch16_224", **TINY, **SMALL, augment=PLAIN, queue_length=6, queue_start_epoch=0),
            1,
        )


@pytest.fixture(scope="module")
def trained():
    return digits_run(SwAV, 0, EPOCHS, BASE_LR, **RUN)


EPOCHS, BASE_LR = 6, 2e-3
RUN = {"projection_hidden_dim": 256, "projection_dim": 64, "num_prototypes": 30, "augment": PLAIN}
LOSS_RATIO = 0.92


def test_optimises_on_the_digits(trained):
    """A 1-block ViT of width 96 (1 head), a head 256 → 64, 30 prototypes (frozen in the first epoch),
    2 global crops of 16 px and 2 local of 8 px, base lr 2e-3, 6 epochs of 128 (66 steps). Measured
    (2026-12-02, 2 CPU cores shared with other jobs, one thread; BENCHMARKS.md, "BYOL, VICReg, Barlow
    Twins and SwAV on the digits"), seeds 0 / 1 / 2: the last epoch's mean loss 0.897 / 0.871 / 0.878
    of the first's; required 0.92. SwAV does not lift kNN at this budget (over the one-step run:
    +0.8 / -0.8 / -3.6 points; 10 epochs at base lr 4e-3: +1.7 / -0.8 / -2.2), so kNN is not asserted."""
    assert trained["ratio"] <= LOSS_RATIO, trained


def test_cli_fast_dev_run_exports_the_encoder(tmp_path, monkeypatch):
    check_cli_and_export("configs/swav/digits.yaml", SwAV, tmp_path, monkeypatch)
