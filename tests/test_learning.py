"""Learning regression checks: a short, fixed-seed SimCLR run must lift kNN top-1 on held-out data
above the same encoder at its random initialisation, by a margin set from measured runs."""

from __future__ import annotations

import lightning as L

from selfsup import ImageDataModule, SimCLR
from selfsup.augment import SimCLRViewConfig
from selfsup.eval import KNNReport
from selfsup.optim import OptimConfig
from tests.helpers import shared_data


def pretrain_and_report(data: ImageDataModule, epochs: int, model: SimCLR) -> dict[str, float]:
    L.seed_everything(0)
    report = KNNReport(k=20, temperature=0.07)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[report])
    trainer.fit(model, data)
    return report.results


def test_simclr_learns_on_cifar10_subset():
    """CIFAR-10 (../shared/data/cifar10): 4,000 training images, 4 epochs (60 steps of 256), a
    4-block ViT-Tiny at 32 px with 8-px patches, AdamW at base lr 2e-3; kNN (k=20) on 2,000 held-out
    test images with the 4,000 training images as the bank.

    Measured on 2 CPU cores (2026-11-22) with seeds 0 to 4 of this set-up (the test uses seed 0):
    random init 26.6 / 28.0 / 28.3 / 26.6 / 27.5 %, pretrained 30.5 / 31.3 / 30.5 / 30.3 / 30.0 %:
    lifts of +3.9 / +3.4 / +2.1 / +3.8 / +2.5 points, 80 to 110 s per run. The required lift,
    +1.5 points, is below the smallest of them, so that other CPUs' numerics (in effect another
    seed) pass, and a run that does not learn (lift about 0) or unlearns fails.
    """
    L.seed_everything(0)
    data = ImageDataModule("folder", str(shared_data("cifar10")), image_size=32, batch_size=256, num_workers=2,
                           train_subset=4000, val_subset=2000)
    model = SimCLR("vit_tiny_patch16_224", img_size=32, patch_size=8, encoder_kwargs={"depth": 4},
                   projection_hidden_dim=512, temperature=0.2,
                   augment=SimCLRViewConfig(crop_scale=(0.2, 1.0), jitter_strength=0.5, blur_prob=0.0),
                   optim=OptimConfig(base_lr=2e-3, weight_decay=0.05, warmup_epochs=1))
    results = pretrain_and_report(data, 4, model)
    assert results["top1_trained"] >= results["top1_init"] + 0.015, results


def test_simclr_learns_on_embedded_digits():
    """scikit-learn digits (always available), 1,437 training / 360 held-out images at 16 px, 4-block
    ViT-Tiny with 4-px patches, 6 epochs (66 steps of 128).

    Measured on 2 CPU cores (2026-11-22) with seeds 0 / 1 / 2 (the test uses seed 0): random init
    45.0 / 44.7 / 46.1 %, pretrained 73.3 / 67.8 / 65.0 %: lifts of +28 / +23 / +19 points in about
    40 s. The required lift is +15 points.
    """
    L.seed_everything(0)
    data = ImageDataModule("digits", image_size=16, batch_size=128, num_workers=0)
    model = SimCLR("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 4},
                   projection_hidden_dim=512, temperature=0.2,
                   augment=SimCLRViewConfig(crop_scale=(0.3, 1.0), hflip_prob=0.0, jitter_strength=0.5,
                                            grayscale_prob=0.0, blur_prob=0.0),
                   optim=OptimConfig(base_lr=1e-3, weight_decay=0.05, warmup_epochs=1))
    results = pretrain_and_report(data, 6, model)
    assert results["top1_trained"] >= results["top1_init"] + 0.15, results
