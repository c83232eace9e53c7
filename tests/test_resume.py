"""Exact resume: a run killed with SIGKILL mid-epoch, or stopped with SIGTERM (as a scheduler does
before preemption), and resumed with ``--ckpt_path last`` ends with the same weights as the same
run uninterrupted."""

import csv
import signal
import subprocess
import time

import pytest
import torch

from tests.helpers import REPO, selfsup_command

ARGS = [
    "fit",
    "-c",
    str(REPO / "configs" / "quickstart.yaml"),
    "--trainer.max_steps=14",
    "--trainer.callbacks=[]",
    "--trainer.log_every_n_steps=1",
    "--data.init_args.train_subset=192",
    "--data.init_args.batch_size=32",
    "--model.init_args.encoder_kwargs={depth: 1}",
    "--checkpoint.every_n_train_steps=1",
    "--checkpoint.monitor=null",
]


def last_step(path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["global_step"])
    except Exception:  # not written yet
        return -1


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's final checkpoint. Run in this process (the interrupted and resumed
    runs are subprocesses): the same command on one thread gives the same bits either way, and it
    saves a process start."""
    from selfsup.cli import run

    work = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        run(ARGS)
    final = torch.load(work / "runs/quickstart/version_0/checkpoints/last.ckpt", weights_only=True)
    final["epoch_losses"] = epoch_losses(work / "runs/quickstart/version_0/metrics.csv")
    return final


def epoch_losses(metrics_csv) -> dict[int, float]:
    """``train/loss_epoch`` by epoch, as metrics.csv records it."""
    with open(metrics_csv) as handle:
        rows = list(csv.DictReader(handle))
    return {int(r["epoch"]): float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")}


def assert_same_training_state(final, expected):
    assert final["global_step"] == expected["global_step"] == 14
    for name, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], value), name
    for a, b in zip(
        final["optimizer_states"][0]["state"].values(),
        expected["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_sigkill_mid_epoch_then_resume_reaches_the_uninterrupted_weights(tmp_path, reference):
    work = _mkdir(tmp_path / "killed")
    last = work / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        selfsup_command() + ARGS, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while last_step(last) < 8 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # mid-epoch (6 steps per epoch), possibly during a checkpoint write
    process.wait()
    killed_at = last_step(last)
    assert 8 <= killed_at < 14, f"killed at step {killed_at}: the run was not interrupted mid-training"

    resumed = subprocess.run(
        selfsup_command() + ARGS + ["--ckpt_path", "last"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from runs/quickstart/version_0/checkpoints/last.ckpt" in resumed.stdout

    final = torch.load(work / "runs/quickstart/version_1/checkpoints/last.ckpt", weights_only=True)
    assert_same_training_state(final, reference)
    # the interrupted run's logs are kept: the resumed run wrote to a new version folder
    assert (work / "runs/quickstart/version_0/metrics.csv").is_file()
    # the epoch the kill interrupted has the epoch mean of the uninterrupted run, not of its resumed
    # steps only (the mean is saved with every checkpoint)
    resumed_losses = epoch_losses(work / "runs/quickstart/version_1/metrics.csv")
    interrupted_epoch = killed_at // 6  # 6 steps per epoch
    assert interrupted_epoch in resumed_losses or killed_at % 6 == 0
    for epoch, loss in resumed_losses.items():
        assert loss == pytest.approx(reference["epoch_losses"][epoch], rel=1e-6), epoch


def test_sigterm_saves_a_resumable_checkpoint_and_exits_cleanly(tmp_path, reference):
    last = tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        selfsup_command() + ARGS, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while last_step(last) < 9 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    start = time.time()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    assert time.time() - start < 60
    assert "stopped on SIGTERM after saving last.ckpt; resume with --ckpt_path last" in stderr
    assert "weights_only` was not set" not in stderr  # the SIGTERM save says what it saves
    stopped_at = last_step(last)
    assert 9 <= stopped_at < 14
    resumed = subprocess.run(
        selfsup_command() + ARGS + ["--ckpt_path", "last"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = torch.load(tmp_path / "runs/quickstart/version_1/checkpoints/last.ckpt", weights_only=True)
    assert_same_training_state(final, reference)


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path
