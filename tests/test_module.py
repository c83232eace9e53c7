"""What every selfsup module shares: no host-device sync inside a training step, logged values as
tensors, and weight-decay groups decided by name."""

import lightning as L
import pytest

from selfsup import DINO, MAE, ImageDataModule, MoCoV3, SimCLR
from tests.helpers import count_host_reads

TINY = {"img_size": 16, "patch_size": 4, "encoder_kwargs": {"depth": 1}}
METHODS = {
    "simclr": (SimCLR, {"projection_hidden_dim": 32, "projection_dim": 16}),
    "mae": (MAE, {}),
    "dino": (DINO, {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "augment": {"local_crops": 2}}),
    "mocov3": (MoCoV3, {"projection_hidden_dim": 32, "prediction_hidden_dim": 32, "projection_dim": 16}),
}


def tiny(name):
    cls, kwargs = METHODS[name]
    return cls("vit_tiny_patch16_224", **TINY, **kwargs)


@pytest.mark.parametrize("name", list(METHODS))
def test_no_host_reads_in_the_training_step_or_the_optimizer_step(name):
    """Every ``.item()``, ``.tolist()``, ``bool()``, ``.cpu()``, boolean-mask index... on a tensor,
    counted while ``training_step`` and ``optimizer_step`` (forward, loss, guard, backward, update,
    EMA) run: on a GPU each would wait for the device. The non-finite guard decides on the device;
    the host reads its flag one step late, outside these hooks."""
    L.seed_everything(0)
    model = tiny(name)
    calls = []
    for hook in ("training_step", "optimizer_step"):
        original = getattr(model, hook)

        def counted(*args, _original=original, **kwargs):
            with count_host_reads() as found:
                result = _original(*args, **kwargs)
            calls.extend(found)
            return result

        setattr(model, hook, counted)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, ImageDataModule(image_size=16, batch_size=16, num_workers=0, train_subset=48))
    assert trainer.global_step == 3
    assert calls == []


def test_weight_decay_is_decided_by_name_before_any_wrapping():
    """FSDP flattens every parameter to 1-D before ``configure_optimizers``: the groups are decided
    from the names recorded in ``setup``, while the shapes are real."""
    model = tiny("simclr")
    model.setup("fit")
    flat_names = {n for n, _ in model.named_parameters()}
    for p in model.parameters():  # what FSDP does to the shapes
        p.data = p.data.reshape(-1)
    groups = model.trainable_groups()
    decayed = {id(p) for g in groups if g["decay"] for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed_names = {names[i] for i in decayed}
    assert "encoder.blocks.0.attn.qkv.weight" in decayed_names and "projection.0.weight" in decayed_names
    assert not {n for n in decayed_names if n.endswith(("bias", "cls_token", "pos_embed")) or "norm" in n}
    assert len(decayed_names) == sum(1 for n in flat_names if n.endswith("weight") and "norm" not in n
                                     and not n.startswith("projection.1"))  # fmt: skip
