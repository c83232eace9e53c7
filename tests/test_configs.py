"""Every YAML file in configs/ is complete and parses; the CPU-sized ones run one step."""

from pathlib import Path

import pytest
import yaml

from selfsup.cli import run
from tests.helpers import REPO, write_image_folder

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def test_there_are_configs():
    names = {str(p.relative_to(REPO / "configs")) for p in CONFIGS}
    assert {"quickstart.yaml", "simclr/vit_tiny_cifar10.yaml", "simclr/vit_small_imagenet.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_config_parses_and_resolves(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "-c", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"].startswith("selfsup.")
    assert resolved["data"]["init_args"]["image_size"] > 0
    raw = yaml.safe_load(Path(config).read_text())
    assert "seed_everything" in raw  # complete files: a run is reproducible from its config alone


def test_cifar_config_runs_one_step_on_a_folder(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4, size=32)
    monkeypatch.chdir(tmp_path)
    cli = run(
        [
            "fit",
            "-c",
            str(REPO / "configs" / "simclr" / "vit_tiny_cifar10.yaml"),
            "--trainer.fast_dev_run=true",
            f"--data.init_args.root={root}",
            "--data.init_args.batch_size=4",
            "--data.init_args.num_workers=0",
            "--model.init_args.encoder_kwargs={depth: 1}",
            "--trainer.accelerator=cpu",
        ]
    )
    assert cli.trainer.global_step == 1
    assert cli.model.image_size == 32 and cli.model.encoder.patch_embed.patch_size == (4, 4)
    assert cli.model.augment_config.jitter_strength == 0.5  # the paper's CIFAR value, from the YAML


def test_quickstart_config_runs_as_written(tmp_path, monkeypatch):
    """The README's first command, unchanged but for fast_dev_run (one step, then the kNN table;
    the console-script run of the same config is tests/test_cli.py)."""
    monkeypatch.chdir(tmp_path)
    cli = run(["fit", "-c", str(REPO / "configs" / "quickstart.yaml"), "--trainer.fast_dev_run=true"])
    assert cli.trainer.global_step == 1
    assert cli.model.encoder.patch_embed.patch_size == (4, 4) and len(cli.model.encoder.blocks) == 4
