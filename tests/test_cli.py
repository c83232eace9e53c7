"""The ``selfsup`` command, run as a user runs it: the installed console script, in a subprocess."""

import csv
import json
import re
import subprocess

import numpy as np
import pytest
import torch
import yaml
from sklearn.neighbors import KNeighborsClassifier

from selfsup.cli import run as selfsup_run
from selfsup.eval.features import extract_features
from tests.helpers import REPO, selfsup_command


def run(args, cwd, timeout=300):
    return subprocess.run(selfsup_command() + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_short_run_saves_config_and_last_checkpoint_without_noise(tmp_path, monkeypatch):
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
    # the kNN report: the same values in the printed table, knn_report.json and the logged metrics
    report = json.loads((run_dir / "knn_report.json").read_text())
    rows = {"top1_init": r"random init\b", "top1_trained": r"pretrained \(2 epochs, 8 steps\)"}
    printed = {
        name: re.search(row + r"[^\n]*?(\d+\.\d\d)", result.stdout).group(1) for name, row in rows.items()
    }
    with (run_dir / "metrics.csv").open() as file:
        logged = [row for row in csv.DictReader(file) if row.get("knn/top1_init")]
    assert len(logged) == 1 and int(logged[0]["step"]) == 8, logged
    for name in ("top1_init", "top1_trained"):
        assert printed[name] == f"{100 * report[name]:.2f}", (name, printed[name], report[name])
        assert float(logged[0][f"knn/{name}"]) == pytest.approx(report[name], abs=1e-9), name
    # top1_init is the kNN accuracy of the random-initialised encoder (the same seed and config,
    # no training), computed here with scikit-learn: cosine neighbours voting with exp(cos / T)
    (tmp_path / "initial").mkdir()
    monkeypatch.chdir(tmp_path / "initial")
    cli = selfsup_run(
        [
            "fit",
            "-c",
            str(REPO / "configs" / "quickstart.yaml"),
            "--trainer.max_epochs=0",
            "--trainer.callbacks=[]",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.train_subset=256",
            "--model.init_args.encoder_kwargs={depth: 1}",
        ]
    )
    model, data = cli.model, cli.datamodule
    assert (report["k"], report["temperature"], report["pool"]) == (20, 0.07, model.default_pool)
    (bank, bank_y), (query, query_y) = (
        extract_features(model.encoder, data.eval_dataloader(split), model.normalize, model.default_pool)
        for split in ("train", "val")
    )
    knn = KNeighborsClassifier(n_neighbors=20, metric="cosine", weights=lambda d: np.exp((1.0 - d) / 0.07))
    knn.fit(bank.double().numpy(), bank_y.numpy())
    expected = float((knn.predict(query.double().numpy()) == query_y.numpy()).mean())
    assert report["top1_init"] == pytest.approx(expected, abs=1e-6)
    assert report["top1_trained"] != pytest.approx(report["top1_init"], abs=1e-6)  # training changed it
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
