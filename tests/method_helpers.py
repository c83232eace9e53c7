"""What the method tests share: tiny encoder settings, one step outside a Trainer, a digits run
scored by kNN, and the CLI + export check of a digits config."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from selfsup import ImageDataModule
from selfsup.cli import run, usage
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy
from selfsup.export import export
from selfsup.optim import OptimConfig
from tests.helpers import REPO, run_in_plain_timm

TINY = {"img_size": 16, "patch_size": 4, "encoder_kwargs": {"depth": 1}}
SMALL = {"projection_hidden_dim": 32, "prediction_hidden_dim": 32, "projection_dim": 16}
# no flip, colour, blur or solarize: grey, asymmetric digits
PLAIN = {"crop_scale": (0.3, 1.0), "hflip_prob": 0.0, "jitter_prob": 0.0, "grayscale_prob": 0.0,
         "blur_prob": 0.0, "solarize_prob": 0.0}  # fmt: skip


def one_step(model, batch_size: int = 4) -> torch.Tensor:
    """One training step outside a Trainer on random images; returns the loss after backward."""
    views = [
        model.normalize(torch.randint(0, 256, (batch_size, 3, 16, 16), dtype=torch.uint8)) for _ in range(2)
    ]
    model.log = lambda *args, **kwargs: None
    model.trainer = L.Trainer(accelerator="cpu", logger=False)
    loss = model.training_step((views, torch.zeros(batch_size)), 0)["loss"]
    loss.backward()
    return loss


def digits_run(cls: type, seed: int, epochs: int, base_lr: float, **method_kwargs) -> dict:
    """Two runs on the digits from ``seed``, one step and ``epochs`` epochs: kNN top-1 (k=20) of the
    backbone after each (``one_step``, ``trained``) and at initialisation (``init``), the last
    epoch's mean loss over the first's (``ratio``), and the spread of the trained embeddings
    (``model(images)``) of the held-out digits (``spread``): the mean over dimensions of the
    standard deviation of the L2-normalised embeddings, times sqrt(dimensions) (1 for isotropic
    embeddings, 0 when they collapse to one point)."""
    narrow = {"depth": 1, "embed_dim": 96, "num_heads": 1}
    out, losses = {}, []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].detach())

    for name, limit in (("one_step", {"max_steps": 1}), ("trained", {"max_epochs": epochs})):
        L.seed_everything(seed)
        model = cls(
            "vit_tiny_patch16_224",
            img_size=16,
            patch_size=4,
            encoder_kwargs=narrow,
            optim=OptimConfig(base_lr=base_lr, weight_decay=0.05, warmup_epochs=1),
            **method_kwargs,
        )
        data = ImageDataModule("digits", image_size=16, batch_size=128, num_workers=0)
        if name == "one_step":
            out["init"] = knn_top1(model, data)
        losses.clear()
        L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, callbacks=[Losses()], **limit).fit(model, data)  # fmt: skip
        out[name] = knn_top1(model, data)
    steps = len(losses) // epochs
    out["ratio"] = float(torch.stack(losses[-steps:]).mean() / torch.stack(losses[:steps]).mean())
    images = torch.cat([batch[0] for batch in data.eval_dataloader("val")])
    with torch.no_grad():
        embeddings = F.normalize(model.eval()(model.normalize(images)), dim=1)
    out["spread"] = float(embeddings.std(dim=0).mean() * embeddings.shape[1] ** 0.5)
    return out


def knn_top1(model, data) -> float:
    """kNN top-1 (k=20, T=0.07) of the backbone's features, held-out digits against the training ones."""
    model.eval()
    train = extract_features(
        model.backbone, data.eval_dataloader("train"), model.normalize, model.default_pool
    )
    val = extract_features(model.backbone, data.eval_dataloader("val"), model.normalize, model.default_pool)
    return knn_accuracy(*train, *val, k=20)


def check_cli_and_export(config: str, cls: type, tmp_path, monkeypatch) -> None:
    """``fast_dev_run`` of a digits config through the CLI, then its export in plain timm equals the
    backbone; ``selfsup --help`` lists the class."""
    monkeypatch.chdir(tmp_path)
    cli = run(["fit", "-c", str(REPO / config), "--trainer.fast_dev_run=true",
               "--model.init_args.encoder_kwargs={depth: 1}", "--trainer.callbacks=[]"])  # fmt: skip
    assert type(cli.model) is cls and cli.trainer.global_step == 1
    cli.trainer.save_checkpoint(tmp_path / "run.ckpt")
    out = export(tmp_path / "run.ckpt", tmp_path / "export")
    x = torch.randn(3, 3, 16, 16)
    features, _ = run_in_plain_timm(out, x, tmp_path)
    with torch.no_grad():
        expected = cli.model.backbone.eval()(x)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    # listed with its summary (a name wider than the help's column runs into it: cli.py's layout)
    assert any(
        line.strip().startswith(f"selfsup.{cls.__name__}") and cls.summary in line
        for line in usage().splitlines()
    )
