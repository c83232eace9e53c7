import math

import pytest
import torch
from timm.optim import Lars

from selfsup.encoders import create_encoder
from selfsup.optim import OptimConfig, WarmupCosine, build_optimizer, param_groups


def test_warmup_then_cosine_numbers():
    schedule = WarmupCosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(14) == pytest.approx(0.1)
    assert schedule(100) == pytest.approx(0.1)
    assert WarmupCosine(0, 10)(0) == pytest.approx(1.0)


def test_lr_scales_with_global_batch():
    assert OptimConfig(base_lr=1e-3).scaled_lr(512) == pytest.approx(2e-3)
    assert OptimConfig(base_lr=1e-3).scaled_lr(64) == pytest.approx(2.5e-4)


def test_no_weight_decay_on_biases_norms_position_embedding_and_class_token():
    encoder = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1)
    groups = param_groups(encoder, 0.05, set(encoder.no_weight_decay()))
    decayed = {id(p) for p in groups[0]["params"]}
    names = {id(p): n for n, p in encoder.named_parameters()}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    decayed_names = {names[i] for i in decayed}
    assert "pos_embed" not in decayed_names and "cls_token" not in decayed_names
    assert all(not n.endswith(".bias") and "norm" not in n for n in decayed_names)
    assert "blocks.0.attn.qkv.weight" in decayed_names and "patch_embed.proj.weight" in decayed_names
    assert sum(len(g["params"]) for g in groups) == len(list(encoder.parameters()))


def test_optimizer_choice_and_validation():
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2, 2))], "weight_decay": 0.0}]
    assert isinstance(build_optimizer(OptimConfig(name="lars"), groups, 0.1), Lars)
    adamw = build_optimizer(OptimConfig(betas=(0.9, 0.95)), groups, 0.1)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.95)
    assert isinstance(build_optimizer(OptimConfig(name="sgd"), groups, 0.1), torch.optim.SGD)
    with pytest.raises(ValueError, match="'adamw', 'lars' or 'sgd'"):
        OptimConfig(name="adam")
    with pytest.raises(ValueError, match="base_lr"):
        OptimConfig(base_lr=0)


@pytest.mark.parametrize("limits", [{"max_epochs": 3}, {"max_steps": 6}, {"max_steps": 6, "max_epochs": 5}])
def test_warmup_epochs_are_whole_epochs_of_steps_however_the_run_is_bounded(limits):
    """4 batches per epoch, warmup_epochs=1.5: 6 warm-up steps whether the trainer counts epochs or
    steps. (A run bounded by max_steps alone used to take an epoch to be the whole run: 1.5 x 6 = 9
    warm-up steps, the peak learning rate never reached.)"""
    import lightning as L

    from selfsup import ImageDataModule, SimCLR

    model = SimCLR(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=8,
        encoder_kwargs={"depth": 1},
        optim=OptimConfig(warmup_epochs=1.5),
    )
    data = ImageDataModule(image_size=16, batch_size=64, num_workers=0, train_subset=256)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, max_steps=limits.get("max_steps", -1),
                        max_epochs=limits.get("max_epochs"))  # fmt: skip
    trainer.fit(model, data)
    schedule = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert schedule.warmup_steps == 6
    assert schedule.total_steps == (12 if limits == {"max_epochs": 3} else 6)


def test_epoch_warmup_without_an_epoch_length_is_refused_with_the_fix():
    """Data without a length and a run set by max_steps alone: an epoch has no number of steps."""
    import lightning as L
    from torch.utils.data import DataLoader, IterableDataset

    from selfsup import SimCLR

    class Endless(IterableDataset):
        def __iter__(self):
            while True:
                yield torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8), 0

    def fit(warmup_epochs):
        model = SimCLR("vit_tiny_patch16_224", img_size=16, patch_size=8, encoder_kwargs={"depth": 1},
                       optim=OptimConfig(warmup_epochs=warmup_epochs))  # fmt: skip
        trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(model, DataLoader(Endless(), batch_size=8))
        return trainer

    with pytest.raises(ValueError, match="set trainer.max_epochs as well, or optim.warmup_epochs: 0"):
        fit(1.0)
    assert fit(0.0).global_step == 2
