from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from selfsup import MAE, ImageDataModule
from selfsup.cli import run
from selfsup.eval import ReconstructionGrid
from tests.helpers import REPO, write_image_folder


def tiny(**kwargs):
    return MAE(**{**dict(img_size=32, patch_size=4, encoder_kwargs={"depth": 2}), **kwargs})


def test_shapes_and_every_trainable_parameter_gets_a_gradient():
    model = tiny()
    pred, target, mask = model(torch.randn(3, 3, 32, 32))
    assert pred.shape == target.shape == (3, 64, 48) and mask.shape == (3, 64)
    loss = model.criterion(pred, target, mask)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert missing == []  # so DDP needs no find_unused_parameters
    assert not any(n.endswith("pos_embed") for n, _ in model.decoder.named_parameters())  # fixed sine-cosine


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.5, 1.2])
def test_mask_ratio_outside_zero_one_is_rejected(ratio):
    with pytest.raises(ValueError, match="mask_ratio must lie strictly between 0 and 1"):
        tiny(mask_ratio=ratio)


def smooth_images(n: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    low = torch.randint(0, 256, (n, 3, 4, 4), generator=g).float()
    return F.interpolate(low, size=size, mode="bilinear").round().to(torch.uint8)


def test_overfits_one_fixed_batch():
    """8 fixed smooth images, random masks every step, AdamW lr 1e-3, 250 steps, a one-block decoder
    (the 4-block default takes twice as long and is not what is tested here).

    The reference is the trivial prediction (all zeros = every patch's own mean under
    norm_pix_loss), whose loss is about 0.94. Measured (2026-11-23, one thread, seeds 0 / 1 / 2): the
    mean of the last 10 losses is 0.24 / 0.29 / 0.29 of the trivial loss (4-block decoder: 0.19 /
    0.15 / 0.26; 150 steps: 0.41 / 0.52 / 0.59). The bound: at most half the trivial loss.
    """
    L.seed_everything(0)
    model = tiny(decoder_depth=1)
    x = model.normalize(smooth_images(8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    losses = []
    for _ in range(250):
        pred, target, mask = model(x)
        loss = model.criterion(pred, target, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    trivial = model.criterion(torch.zeros_like(pred), target, mask).item()
    assert trivial > 0.8
    assert sum(losses[-10:]) / 10 <= 0.5 * trivial, (losses[:3], losses[-10:], trivial)


def test_reconstruction_grid_png_has_the_expected_size(tmp_path):
    L.seed_everything(0)
    model = tiny()
    data = ImageDataModule(image_size=32, batch_size=16, num_workers=0, train_subset=32, val_subset=16)
    callback = ReconstructionGrid(every_n_epochs=1, num_images=4)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[callback],
    )
    trainer.fit(model, data)
    assert len(callback.paths) == 1 and callback.paths[0].name == "epoch_000.png"
    image = Image.open(callback.paths[0])
    side = 32 * 3  # 32-px images are enlarged 3x (nearest) to at least 96 px
    assert image.size == (
        4 * (side + 2) + 2,
        3 * (side + 2) + 2,
    )  # 4 columns; original / masked / reconstruction
    assert image.mode == "RGB"


def resolved_config(path, capsys):
    """The config ``selfsup fit -c path`` runs, as ``--print_config`` prints it (defaults filled in)."""
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "-c", str(REPO / path), "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_switching_class_path_from_simclr_to_mae_changes_nothing_else(capsys):
    """The MAE config is the SimCLR one with the method switched: as the CLI resolves them, the data,
    checkpoint and seed are the same, the trainer differs only in the run name, the epochs and MAE's
    reconstruction grid, and the model only in each method's own arguments."""
    simclr = resolved_config("configs/simclr/vit_tiny_cifar10.yaml", capsys)
    mae = resolved_config("configs/mae/vit_tiny_cifar10.yaml", capsys)
    assert (simclr["model"]["class_path"], mae["model"]["class_path"]) == ("selfsup.SimCLR", "selfsup.MAE")
    for section in ("data", "checkpoint", "seed_everything"):
        assert mae[section] == simclr[section], section
    own = ("logger", "callbacks", "max_epochs")
    assert {k: v for k, v in mae["trainer"].items() if k not in own} == {
        k: v for k, v in simclr["trainer"].items() if k not in own
    }
    logger = simclr["trainer"]["logger"]
    assert mae["trainer"]["logger"] == {
        **logger,
        "init_args": {**logger["init_args"], "name": "mae_vit_tiny_cifar10"},
    }
    grid = [c for c in mae["trainer"]["callbacks"] if c["class_path"] == "selfsup.eval.ReconstructionGrid"]
    assert len(grid) == 1
    assert [c for c in mae["trainer"]["callbacks"] if c not in grid] == simclr["trainer"]["callbacks"]
    simclr_args, mae_args = simclr["model"]["init_args"], mae["model"]["init_args"]
    shared = (simclr_args.keys() & mae_args.keys()) - {"augment", "optim"}  # each method's own values
    assert {"encoder", "patch_size", "encoder_kwargs"} <= shared
    assert {k: mae_args[k] for k in shared} == {k: simclr_args[k] for k in shared}


def test_cli_fast_dev_run_of_the_mae_config(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4, size=32)
    monkeypatch.chdir(tmp_path)
    cli = run(
        [
            "fit",
            "-c",
            str(REPO / "configs/mae/vit_tiny_cifar10.yaml"),
            "--trainer.fast_dev_run=true",
            f"--data.init_args.root={root}",
            "--data.init_args.batch_size=4",
            "--data.init_args.num_workers=0",
            "--trainer.accelerator=cpu",
        ]
    )
    assert isinstance(cli.model, MAE) and cli.trainer.global_step == 1
    assert len(cli.model.encoder.blocks) == 12 and cli.model.image_size == 32
    pngs = list(Path(tmp_path).rglob("reconstructions/*.png"))
    assert len(pngs) == 1
