"""MoCo v3 as a method: the momentum branch, the frozen patch projection, learning on the digits,
the CLI and the export. The loss and MLPs have their own tests (tests/losses/test_moco.py,
tests/heads/test_moco.py)."""

import lightning as L
import torch

from selfsup import ImageDataModule, MoCoV3
from selfsup.eval import KNNReport
from selfsup.export import export
from selfsup.optim import OptimConfig
from tests.helpers import REPO, run_in_plain_timm

TINY = {"img_size": 16, "patch_size": 4, "encoder_kwargs": {"depth": 1}}
SMALL = {"projection_hidden_dim": 32, "prediction_hidden_dim": 32, "projection_dim": 16}


def test_branches_frozen_patch_embedding_and_gradients():
    model = MoCoV3("vit_tiny_patch16_224", **TINY, **SMALL)
    assert model.backbone is model.momentum_encoder and not hasattr(model, "momentum_predictor")
    assert not any(p.requires_grad for p in model.encoder.patch_embed.parameters())  # the paper's trick
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())
    views = [model.normalize(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)) for _ in range(2)]
    model.log = lambda *args, **kwargs: None
    model.trainer = L.Trainer(accelerator="cpu", logger=False)
    loss = model.training_step((views, torch.zeros(4)), 0)["loss"]
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    assert all(p.grad is None for p in model.momentum_projector.parameters())
    unfrozen = MoCoV3("vit_tiny_patch16_224", **TINY, **SMALL, freeze_patch_embed=False)
    assert all(p.requires_grad for p in unfrozen.encoder.patch_embed.parameters())


def digits_run(seed: int, momentum: float = 0.0) -> tuple[dict, float]:
    """kNN before and after the short digits run, and the last epoch's mean loss over the first's."""
    L.seed_everything(seed)
    view = {"crop_scale": (0.3, 1.0), "hflip_prob": 0.0, "jitter_prob": 0.0, "grayscale_prob": 0.0}
    narrow = {"depth": 2, "embed_dim": 96, "num_heads": 1}
    model = MoCoV3("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs=narrow,
                   projection_hidden_dim=256, prediction_hidden_dim=256, projection_dim=64, momentum=momentum, view1=view,
                   view2=view, optim=OptimConfig(base_lr=4e-3, weight_decay=0.05, warmup_epochs=1))  # fmt: skip
    losses = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].detach())

    report = KNNReport(k=20)
    L.Trainer(accelerator="cpu", max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[report, Losses()]).fit(
        model, ImageDataModule("digits", image_size=16, batch_size=128, num_workers=0)
    )  # fmt: skip
    steps = len(losses) // 6  # per epoch
    ratio = float(torch.stack(losses[-steps:]).mean() / torch.stack(losses[:steps]).mean())
    return report.results, ratio


def test_learns_on_the_digits():
    """Digits (1,437 / 360 at 16 px), a narrow 2-block ViT (width 96, 1 head), base lr 4e-3,
    momentum 0 → 1 (the digits recipe's: a short run needs keys from the current encoder), 6 epochs of
    128 (66 steps), no colour or flip. Measured (2026-12-02, 2 CPU cores, one thread, seeds 0 / 1 /
    2): kNN top-1 of the momentum encoder 41.4 / 42.8 / 45.8 % at initialisation, 56.4 / 57.2 / 58.9 %
    trained (+15.0 / +14.4 / +13.1 points); the last epoch's mean loss is 0.761 / 0.768 / 0.751 of the
    first's. The same day at momentum 0.9 (the previous recipe): +9.2 / +8.3 / +6.9, ratios 0.817 /
    0.808 / 0.810. Required: a kNN lift of 10 points and a loss ratio below 0.79, both below the
    weakest seed at momentum 0 and above every seed at 0.9 in lift."""
    results, ratio = digits_run(0)
    assert results["top1_trained"] >= results["top1_init"] + LIFT, results
    assert ratio <= LOSS_RATIO, ratio


LIFT = 0.10
LOSS_RATIO = 0.79


def test_cli_fast_dev_run_exports_the_momentum_encoder(tmp_path, monkeypatch):
    from selfsup.cli import run

    monkeypatch.chdir(tmp_path)
    cli = run(["fit", "-c", str(REPO / "configs/mocov3/digits.yaml"), "--trainer.fast_dev_run=true",
               "--model.init_args.encoder_kwargs={depth: 1}", "--trainer.callbacks=[]"])  # fmt: skip
    assert isinstance(cli.model, MoCoV3) and cli.trainer.global_step == 1
    cli.trainer.save_checkpoint(tmp_path / "moco.ckpt")
    out = export(tmp_path / "moco.ckpt", tmp_path / "export")
    x = torch.randn(3, 3, 16, 16)
    features, _ = run_in_plain_timm(out, x, tmp_path)
    with torch.no_grad():
        expected = cli.model.momentum_encoder.eval()(x)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)


def test_the_reference_vit_small_fixed_sincos_position_embedding_and_decay_of_every_parameter():
    """``configs/mocov3/vit_small_imagenet.yaml`` builds MoCo v3's ViT-S: 12 heads, a fixed 2-D
    sine-cosine position embedding (frozen in both branches) and weight decay on every parameter."""
    import yaml

    from selfsup.encoders import sincos_2d
    from selfsup.optim import OptimConfig, decayed_names
    from tests.helpers import REPO

    args = yaml.safe_load((REPO / "configs/mocov3/vit_small_imagenet.yaml").read_text())["model"]["init_args"]
    model = MoCoV3(
        args["encoder"], img_size=32, patch_size=16, encoder_kwargs={**args["encoder_kwargs"], "depth": 1},
        fixed_pos_embed=args["fixed_pos_embed"], optim=args["optim"], projection_hidden_dim=16,
        prediction_hidden_dim=16, projection_dim=8,
    )  # fmt: skip
    assert model.encoder.blocks[0].attn.num_heads == 12
    table = sincos_2d(2, 2, 384, 1).unsqueeze(0)
    for encoder in (model.encoder, model.momentum_encoder):
        assert torch.equal(encoder.pos_embed, table) and not encoder.pos_embed.requires_grad
    assert OptimConfig(**args["optim"]).decay_all
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decayed_names(model, model.no_weight_decay_names(), decay_all=True) == trainable
