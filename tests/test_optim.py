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


def _vit_with_head_and_decoder():
    from torch import nn

    module = nn.Module()
    module.encoder = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=3, reg_tokens=2)
    module.head = nn.Linear(192, 4)
    module.mask_token = nn.Parameter(torch.zeros(1, 192))
    module.decoder = nn.Module()
    module.decoder.blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))  # shallower: not the ViT
    return module


def test_layer_decay_and_patch_embed_multiplier_follow_dinov2_by_name():
    """dinov2 ``get_vit_lr_decay_rate`` for a depth-3 ViT: block i at 0.9 ** (3 - i), embeddings
    (and a method's top-level mask token) at 0.9 ** 4, the patch embedding 0.2 times that, the final
    norm, the head and another module's shallower blocks at 1."""
    from selfsup.optim import lr_scales

    module = _vit_with_head_and_decoder()
    scales = lr_scales([n for n, _ in module.named_parameters()], 0.9, 0.2)
    assert scales["encoder.blocks.0.attn.qkv.weight"] == pytest.approx(0.9**3)
    assert scales["encoder.blocks.2.mlp.fc2.bias"] == pytest.approx(0.9)
    for name in ("encoder.pos_embed", "encoder.cls_token", "encoder.reg_token", "mask_token"):
        assert scales[name] == pytest.approx(0.9**4), name
    assert scales["encoder.patch_embed.proj.weight"] == pytest.approx(0.2 * 0.9**4)
    for name in ("encoder.norm.weight", "head.weight", "decoder.blocks.1.weight"):
        assert scales[name] == 1.0, name


def test_param_groups_split_by_lr_scale_only_when_asked():
    module = _vit_with_head_and_decoder()
    plain = param_groups(module, 0.05)
    assert [(g["decay"], "lr_scale" in g) for g in plain] == [(True, False), (False, False)]
    groups = param_groups(module, 0.05, layer_decay=0.9, patch_embed_lr_mult=0.2)
    assert groups[0]["lr_scale"] == 1.0 and groups[0]["decay"]  # train/lr logs the full rate
    assert sorted({round(g["lr_scale"], 6) for g in groups}) == sorted(
        {round(s, 6) for s in (1.0, 0.9, 0.81, 0.729, 0.6561, 0.2 * 0.6561)}
    )
    assert all(g["weight_decay"] == (0.05 if g["decay"] else 0.0) for g in groups)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(module.parameters()))
    # the decay split is the same as without layer decay
    assert {id(p) for g in groups if g["decay"] for p in g["params"]} == {id(p) for p in plain[0]["params"]}
    with pytest.raises(ValueError, match="layer_decay"):
        OptimConfig(layer_decay=0.0)
    with pytest.raises(ValueError, match="patch_embed_lr_mult"):
        OptimConfig(patch_embed_lr_mult=0.0)


def test_a_method_passes_its_layer_decay_to_the_optimiser_groups():
    from selfsup import SimCLR

    model = SimCLR("vit_tiny_patch16_224", img_size=16, patch_size=8, encoder_kwargs={"depth": 2},
                   optim=OptimConfig(layer_decay=0.5, patch_embed_lr_mult=0.2))  # fmt: skip
    scales = {id(p): g.get("lr_scale", 1.0) for g in model.trainable_groups() for p in g["params"]}
    assert scales[id(model.encoder.blocks[0].attn.qkv.weight)] == pytest.approx(0.25)
    assert scales[id(model.encoder.patch_embed.proj.weight)] == pytest.approx(0.2 * 0.125)
    default = SimCLR("vit_tiny_patch16_224", img_size=16, patch_size=8, encoder_kwargs={"depth": 2})
    assert all("lr_scale" not in g for g in default.trainable_groups())


def test_held_groups_follow_their_closed_form():
    """A head warm-up's backbone: 0 for the held steps, then the schedule times a linear ramp."""
    from selfsup.optim import HeldWarmup, WarmupCosine

    schedule = WarmupCosine(warmup_steps=4, total_steps=40, min_ratio=0.1)
    held = HeldWarmup(schedule, held_steps=10, warmup_steps=5)
    for step in range(40):
        ramp = 0.0 if step < 10 else min(1.0, (step - 10 + 1) / 5)
        assert held(step) == pytest.approx(schedule(step) * ramp, abs=0), step
    assert HeldWarmup(schedule, 0, 0)(3) == schedule(3)


def test_decay_all_decays_every_trainable_parameter_as_moco_v3s_reference():
    """MoCo v3 hands ``model.parameters()`` to one AdamW with weight decay 0.1: biases, norms and the
    position embedding decay too. ``decay_all`` does that; the default exempts them."""
    from selfsup.encoders import create_encoder
    from selfsup.optim import decayed_names, param_groups

    encoder = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=1)
    everything = {n for n, p in encoder.named_parameters() if p.requires_grad}
    default = decayed_names(encoder, ("pos_embed", "cls_token"))
    assert (
        "blocks.0.attn.qkv.weight" in default
        and not {"pos_embed", "cls_token", "blocks.0.norm1.bias"} & default
    )
    assert decayed_names(encoder, ("pos_embed", "cls_token"), decay_all=True) == everything
    groups = param_groups(encoder, 0.1, decayed=decayed_names(encoder, decay_all=True))
    assert len(groups) == 1 and groups[0]["decay"] and len(groups[0]["params"]) == len(everything)
