"""Loggers selectable from the config; W&B falls back to offline without credentials or network,
writes its run to disk (syncable later) and neither crashes nor hangs."""

import time

import pytest

from selfsup.cli import run
from selfsup.loggers import WandbLogger, wandb_credentials
from tests.helpers import REPO

ARGS = [
    "fit",
    "-c",
    str(REPO / "configs/quickstart.yaml"),
    "--trainer.max_steps=2",
    "--trainer.callbacks=[]",
    "--trainer.log_every_n_steps=1",
    "--data.init_args.train_subset=64",
    "--data.init_args.batch_size=32",
    "--model.init_args.encoder_kwargs={depth: 1}",
]


def test_tensorboard_logger_from_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run(
        ARGS
        + [
            "--trainer.logger={class_path: lightning.pytorch.loggers.TensorBoardLogger, "
            "init_args: {save_dir: runs, name: tb}}"
        ]
    )
    assert cli.trainer.global_step == 2
    events = list((tmp_path / "runs" / "tb").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (tmp_path / "runs/tb/version_0/config.yaml").is_file()


def test_wandb_goes_offline_without_credentials_and_keeps_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a W&B key
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert not wandb_credentials()
    start = time.monotonic()
    cli = run(
        ARGS
        + [
            "--trainer.logger={class_path: selfsup.loggers.WandbLogger, "
            "init_args: {save_dir: runs, project: selfsup-test, name: offline-check}}"
        ]
    )
    assert time.monotonic() - start < 120
    assert cli.trainer.global_step == 2 and cli.trainer.logger._offline
    runs = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))  # the history `wandb sync` uploads later
    import wandb

    wandb.finish()


@pytest.mark.parametrize(
    ("mode", "key", "reachable", "offline"),
    [
        ("offline", True, True, True),  # asked for
        ("disabled", True, True, True),  # asked for
        ("", False, True, True),  # no API key
        ("", True, False, True),  # W&B does not answer
        ("", True, True, False),  # everything in place: online
    ],
)
def test_wandb_goes_offline_exactly_when_online_logging_cannot_work(
    tmp_path, monkeypatch, mode, key, reachable, offline
):
    import selfsup.loggers as loggers

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_MODE", mode)
    if key:
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    else:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(loggers, "wandb_reachable", lambda timeout: reachable)
    logger = WandbLogger(save_dir=str(tmp_path))
    assert logger._offline is offline
