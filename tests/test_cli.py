"""The ``selfsup`` command, run as a user runs it: the installed console script, in a subprocess."""

import json
import subprocess

import pytest
import torch
import yaml

from selfsup.cli import run as selfsup_run
from tests.helpers import REPO, selfsup_command


def run(args, cwd, timeout=300):
    return subprocess.run(selfsup_command() + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_short_run_saves_config_and_last_checkpoint_without_noise(tmp_path):
    result = run(
        [
            "fit",
            "-c",
            str(REPO / "configs" / "quickstart.yaml"),
            "--trainer.max_epochs=2",
            "--data.init_args.train_subset=256",
            "--data.init_args.batch_size=64",
            "--model.init_args.encoder_kwargs={depth: 1}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kNN top-1 on the held-out split" in result.stdout  # the quickstart's KNNReport table
    run_dir = tmp_path / "runs" / "quickstart" / "version_0"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["class_path"] == "selfsup.SimCLR"
    assert config["data"]["init_args"]["image_size"] == 16
    assert config["model"]["init_args"]["encoder_kwargs"] == {"depth": 1}
    # no monitor that means "better" (a KNNReport is not one): last.ckpt only, the final state
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["selfsup"]["method"] == "simclr" and last["global_step"] == 8
    assert last["selfsup"]["backbone"]["img_size"] == 16  # data.image_size, linked into the model
    report = json.loads((run_dir / "knn_report.json").read_text())
    assert 0 <= report["top1_init"] <= 1 and 0 <= report["top1_trained"] <= 1
    # nothing that says nothing to a user (selfsup._lightning.quiet)
    for noise in (
        "litlogger",
        "LeafSpec",
        "Total FLOPs",
        "FLOPs",
        "weights_only",
        "to estimate number of stepping",
    ):
        assert noise not in result.stdout + result.stderr, noise


def test_the_progress_bar_ends_at_the_last_step_of_a_short_run(tmp_path, monkeypatch, capsys):
    """It refreshes every 10 steps; a run of 3 steps in an epoch of 4 used to end showing 0/4."""
    monkeypatch.chdir(tmp_path)
    selfsup_run(
        [
            "fit",
            "-c",
            str(REPO / "configs" / "quickstart.yaml"),
            "--trainer.max_steps=3",
            "--trainer.callbacks=[]",
            "--data.init_args.train_subset=128",
            "--data.init_args.batch_size=32",
            "--model.init_args.encoder_kwargs={depth: 1}",
        ]
    )
    bar = capsys.readouterr().out.split("\r")
    final = [frame for frame in bar if frame.startswith("Epoch 1/20")][-1]
    assert " 3/4 " in final, final


def test_print_config_resolves_every_section(capsys):
    with pytest.raises(SystemExit) as exit_info:
        selfsup_run(["fit", "-c", str(REPO / "configs" / "quickstart.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["optim"]["name"] == "adamw"
    assert config["checkpoint"]["save_last"] is True


def test_enable_checkpointing_false_also_drops_the_checkpoint_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = selfsup_run(
        [
            "fit",
            "-c",
            str(REPO / "configs" / "quickstart.yaml"),
            "--trainer.max_steps=1",
            "--trainer.enable_checkpointing=false",
            "--trainer.callbacks=[]",
            "--data.init_args.train_subset=64",
            "--data.init_args.batch_size=32",
            "--model.init_args.encoder_kwargs={depth: 1}",
        ]
    )
    assert cli.trainer.global_step == 1 and cli.trainer.checkpoint_callback is None
    assert not list(tmp_path.rglob("*.ckpt"))
