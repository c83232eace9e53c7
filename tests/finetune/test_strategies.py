import copy

import lightning as L
import pytest
import torch

from selfsup import FineTune, ImageDataModule
from selfsup.finetune import STRATEGIES, Full, LoRA, Partial, Prompt
from selfsup.finetune.lora import LoRALinear, merge_lora


def vit(strategy, depth=4, **kwargs):
    L.seed_everything(0)
    return FineTune(
        "vit_tiny_patch16_224",
        num_classes=10,
        strategy=strategy,
        img_size=16,
        patch_size=4,
        backbone_kwargs={"depth": depth},
        **kwargs,
    )


def trainable(module):
    return {n for n, p in module.encoder.named_parameters() if p.requires_grad}


def names(module):
    return {n for n, _ in module.encoder.named_parameters()}


def test_exact_trainable_sets_per_strategy():
    full = vit("full")
    assert trainable(full) == names(full)
    assert trainable(vit("linear")) == set()
    partial = vit(Partial(blocks=2))
    assert trainable(partial) == {
        n for n in names(partial) if n.startswith(("blocks.2.", "blocks.3.", "norm."))
    }
    bitfit = vit("bitfit")
    assert trainable(bitfit) == {n for n in names(bitfit) if n.endswith("bias")} and trainable(bitfit)
    lora = vit("lora")
    assert trainable(lora) == {f"blocks.{i}.attn.qkv.lora_{x}" for i in range(4) for x in "AB"}
    adapter = vit("adapter")
    assert (
        trainable(adapter) == {n for n in names(adapter) if ".adapter." in n}
        and len(trainable(adapter)) == 4 * 2 * 4
    )
    assert trainable(vit("prompt")) == {"prompt_tokens"}
    for module in (full, partial, bitfit, lora, adapter):
        assert all(p.requires_grad for p in module.head.parameters())


def test_trainable_share_of_parameter_efficient_strategies_on_vit_tiny():
    shares = {
        name: vit(name, depth=12).trainable_summary()["share"]
        for name in ("lora", "bitfit", "prompt", "adapter")
    }
    # measured (ViT-Tiny, 10-class linear head): lora 1.39 %, bitfit 0.52 %, prompt 0.07 %, adapter 4.09 %
    assert (
        shares["lora"] < 0.05
        and shares["bitfit"] < 0.05
        and shares["prompt"] < 0.01
        and shares["adapter"] < 0.06
    )
    assert vit("full", depth=12).trainable_summary()["share"] == 1.0


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_trainable_parameter_gets_a_gradient_and_frozen_weights_stay(strategy, tmp_path):
    module = vit(strategy, depth=2)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    logits = module(torch.randn(4, 3, 16, 16))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    module.task.loss(logits, torch.arange(4)).backward()
    # LoRA's A and an adapter's down-projection get an exactly zero gradient at the very first step
    # (their partner starts at zero, so the adapted layer starts as the original); they are still in
    # the graph, and they move from the second step on (checked below)
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    zero = {n for n, p in module.named_parameters() if p.requires_grad and p.grad.abs().sum() == 0}
    assert all(n.endswith("lora_A") or ".adapter.down." in n for n in zero), zero
    module.zero_grad()
    data = ImageDataModule(image_size=16, batch_size=32, num_workers=0, train_subset=64, val_subset=32)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    for name, p in module.named_parameters():
        if p.requires_grad:
            continue
        assert torch.equal(p.detach(), before[name]), f"frozen {name} changed"
    unchanged = [
        n for n, p in module.named_parameters() if p.requires_grad and torch.equal(p.detach(), before[n])
    ]
    assert unchanged == [], "trainable but not trained"


def test_linear_keeps_the_backbone_in_eval_mode():
    module = vit("linear", depth=1)
    module.train()
    assert not module.encoder.training and module.head.training


def test_layer_wise_decay_numbers():
    depth, decay = 4, 0.5
    module = vit(Full(layer_decay=decay), depth=depth)
    scale = {}
    for group in module.strategy.param_groups(module.encoder, 0.05):
        for p in group["params"]:
            scale[id(p)] = group["lr_scale"]
    named = dict(module.encoder.named_parameters())
    # timm's convention: block i at decay^(d - 1 - i), the stem one level below block 0, the final
    # norm with the last block
    for i in range(depth):
        assert scale[id(named[f"blocks.{i}.attn.qkv.weight"])] == pytest.approx(decay ** (depth - 1 - i))
        assert scale[id(named[f"blocks.{i}.norm1.bias"])] == pytest.approx(decay ** (depth - 1 - i))
    for name in ("patch_embed.proj.weight", "cls_token", "pos_embed"):
        assert scale[id(named[name])] == pytest.approx(decay**depth)
    assert scale[id(named["norm.weight"])] == 1.0
    decayed = {
        id(p)
        for g in module.strategy.param_groups(module.encoder, 0.05)
        if g["weight_decay"] > 0
        for p in g["params"]
    }
    assert id(named["cls_token"]) not in decayed and id(named["pos_embed"]) not in decayed
    assert (
        id(named["blocks.0.attn.qkv.weight"]) in decayed
        and id(named["blocks.0.attn.qkv.bias"]) not in decayed
    )
    # and in the optimiser a fit builds: group lr = base lr x scale (x global batch / 256)
    data = ImageDataModule(image_size=16, batch_size=64, num_workers=0, train_subset=64, val_subset=16)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    lr = module.optim.base_lr * 64 / 256
    initial = {round(g["initial_lr"] / lr, 6) for g in trainer.optimizers[0].param_groups}
    assert initial == {round(decay**k, 6) for k in range(depth + 1)}


def test_lora_merge_keeps_outputs():
    module = vit(LoRA(rank=4, targets=("qkv", "proj")), depth=2).eval()
    for m in module.encoder.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B, std=0.05)  # as after training: the adapters are not zero
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        before = module(x)
        merged = merge_lora(copy.deepcopy(module.encoder))
        module.encoder = merged
        after = module(x)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["linear", "full", Partial(blocks=1), "bitfit"])
def test_cnn_backbones_work_with_the_strategies_that_apply(strategy):
    module = FineTune("resnet18", num_classes=3, strategy=strategy, img_size=32)
    logits = module(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 3)
    assert module.trainable_summary()["trainable"] > 0


def test_resnet50_as_in_the_seed_documents():
    module = FineTune("resnet50", num_classes=5, strategy=Partial(blocks=1))
    assert module.encoder.num_features == 2048
    trainable_names = {n for n, p in module.encoder.named_parameters() if p.requires_grad}
    assert trainable_names and all(n.startswith("layer4.") for n in trainable_names)


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ("lora", "LoRA applies to the attention projections"),
        ("adapter", "applies to Vision Transformers"),
        ("prompt", "applies to Vision Transformers"),
    ],
)
def test_strategies_that_do_not_apply_to_a_cnn_say_so(strategy, message):
    with pytest.raises(ValueError, match=message):
        FineTune("resnet18", num_classes=3, strategy=strategy)


def test_unknown_strategy_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown fine-tuning strategy 'lorax'"):
        vit("lorax")
    with pytest.raises(ValueError, match="layer_decay"):
        Full(layer_decay=1.5)
    with pytest.raises(ValueError, match="only 4 blocks"):
        vit(Partial(blocks=9))
    with pytest.raises(ValueError, match="patch_size applies to ViT"):
        FineTune("resnet18", patch_size=4)


def test_prompt_tokens_are_ignored_by_pooling():
    module = vit(Prompt(num_tokens=3), depth=1, pool="avg").eval()
    out, prefix = module.strategy.encode(module.encoder, torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 1 + 3 + 16, 192) and prefix == 4


def test_each_strategy_declares_the_backbone_transform_its_checkpoints_used_to_imply():
    """A fine-tune checkpoint declares how its backbone becomes plain timm weights, so the contract
    knows no strategy; the declaration of every strategy agrees with the mapping kept for records
    written before it existed (LoRA: merge at alpha / rank; adapter, prompt: no plain model)."""
    from selfsup.backbone_state import legacy_backbone_transform
    from selfsup.config_values import plain
    from selfsup.finetune.strategies import STRATEGIES

    seen = set()
    for name, strategy_type in STRATEGIES.items():
        strategy = strategy_type()
        record = {"name": name, **plain(strategy)}
        assert strategy.backbone_transform() == legacy_backbone_transform(record), name
        seen.add(strategy.backbone_transform()["kind"])
    assert seen == {"none", "merge_low_rank", "not_plain"}
