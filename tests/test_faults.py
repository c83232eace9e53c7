"""Faults that must not lose a run: NaN losses, a full disk while saving, a kill during a checkpoint
write, and one failing process in a multi-process job."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import selfsup.checkpoint as checkpoint_module
from selfsup import ImageDataModule, SimCLR
from selfsup.checkpoint import AtomicCheckpointIO, ExactResume
from selfsup.guard import NonFiniteLossError
from tests.helpers import REPO, selfsup_command


def module(**kwargs):
    L.seed_everything(0)
    return SimCLR(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=4,
        encoder_kwargs={"depth": 1},
        projection_hidden_dim=32,
        projection_dim=16,
        **kwargs,
    )


def nan_at(model, steps):
    """Make the loss NaN at the given global steps (as an overflow would)."""
    criterion = model.criterion.forward

    def forward(z1, z2):
        loss = criterion(z1, z2)
        return loss * float("nan") if model.trainer.global_step in steps else loss

    model.criterion.forward = forward


def fit(model, tmp_path, steps=8, callbacks=()):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", every_n_train_steps=1, save_last=True, monitor=None
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        callbacks=[checkpoint, ExactResume(), *callbacks],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, ImageDataModule(image_size=16, batch_size=16, num_workers=0, train_subset=64))
    return trainer


def finite(state_dict):
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


def test_nan_loss_stops_training_naming_the_step_and_the_kept_checkpoint(tmp_path):
    """The guard decides on the device (the fused optimiser skips the update) and the host learns of
    it one step late, before the next step's forward: training stops naming the bad step, and the
    checkpoint written after it holds the unchanged, finite weights."""
    model = module()
    nan_at(model, {3})
    before = {}

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            before[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    with pytest.raises(
        NonFiniteLossError, match=r"NaN / infinite at step 3 .*Last good checkpoint: '.*last.ckpt' \(kept\)"
    ):
        fit(model, tmp_path, callbacks=[Snapshot()])
    # the guard stopped training at the start of step 4, before its forward
    assert max(before) == 4 and model.trainer.global_step == 4
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and finite(last["state_dict"])
    # the bad step changed no weight (BatchNorm's running statistics moved: its forward ran)
    names = {name for name, _ in model.named_parameters()}
    weights = {k: v for k, v in last["state_dict"].items() if k in names}
    assert len(weights) == len(names)
    assert all(torch.equal(v, before[3][k]) for k, v in weights.items())
    assert all(torch.equal(v, before[4][k]) for k, v in weights.items())
    assert last["optimizer_states"][0]["state"][0]["step"] == 3  # the fused optimiser skipped step 3


def test_a_bounded_number_of_nan_steps_can_be_skipped(tmp_path):
    model = module(skip_nonfinite_steps=2)
    nan_at(model, {3, 5})
    with pytest.warns(UserWarning, match="non-finite loss .* at step 3 .*step skipped"):
        trainer = fit(model, tmp_path / "a")
    # a skipped step leaves every weight unchanged (no gradient reaches the optimiser) but still
    # counts as a step of the schedule
    assert trainer.global_step == 8 and model.nonfinite_guard.skipped == 2 and finite(model.state_dict())
    again = module(skip_nonfinite_steps=1)
    nan_at(again, {2, 4})
    with pytest.raises(NonFiniteLossError, match="at step 4"):
        fit(again, tmp_path / "b")


def test_a_skipped_step_changes_no_weight(tmp_path):
    model = module(skip_nonfinite_steps=1)
    nan_at(model, {1})
    snapshots = {}

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            snapshots[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.named_parameters()}

    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor=None)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        callbacks=[Snapshot(), checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, ImageDataModule(image_size=16, batch_size=16, num_workers=0, train_subset=64))
    assert all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1])  # step 1 was skipped
    assert not all(torch.equal(snapshots[0][k], snapshots[1][k]) for k in snapshots[0])  # step 0 trained
    assert finite(dict(model.named_buffers()))


def test_full_disk_during_a_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    saves = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd):
        saves["n"] += 1
        if saves["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(checkpoint_module.os, "fsync", fsync)
    with pytest.raises(
        OSError,
        match=r"could not write checkpoint '.*' \(No space left on device\); the previous "
        r"file, if any, is unchanged. Free disk space",
    ):
        fit(module(), tmp_path)
    monkeypatch.undo()
    checkpoints = tmp_path / "checkpoints"
    assert not list(checkpoints.glob(".*.tmp"))  # no temporary file left behind
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["global_step"] >= 1 and finite(last["state_dict"])


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_file(tmp_path):
    """A process is SIGKILLed in the middle of writing last.ckpt (its data is in the temporary file,
    not yet renamed): last.ckpt is still the previous, complete checkpoint."""
    target = tmp_path / "last.ckpt"
    script = textwrap.dedent(f"""
        import os, time, torch
        import selfsup.checkpoint as c
        c.atomic_torch_save({{"step": 1}}, {str(target)!r})
        def slow_fsync(fd):
            print("writing", flush=True)
            time.sleep(60)
        c.os.fsync = slow_fsync
        c.atomic_torch_save({{"step": 2, "weights": torch.zeros(1_000_000)}}, {str(target)!r})
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert len(list(tmp_path.glob(".last.ckpt.*.tmp"))) == 1  # the dead writer's temporary file...
    checkpoint_module.atomic_torch_save({"step": 3}, target)
    assert not list(tmp_path.glob(".last.ckpt.*.tmp"))  # ...is cleared by the next save
    assert torch.load(target, weights_only=True) == {"step": 3}


@pytest.mark.slow
def test_one_failing_process_ends_the_whole_ddp_job_quickly(tmp_path):
    start = time.monotonic()
    result = subprocess.run(
        selfsup_command()
        + [
            "fit",
            "-c",
            str(REPO / "configs/quickstart.yaml"),
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
            "--trainer.max_steps=50",
            "--trainer.callbacks=[{class_path: tests.faulty.FailOnRank, init_args: {rank: 1, step: 2}}]",
            "--data.init_args.train_subset=256",
            "--data.init_args.batch_size=16",
            "--model.init_args.encoder_kwargs={depth: 1}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "injected failure on rank 1 at step 2" in result.stderr
    assert elapsed < 120, f"the job took {elapsed:.0f} s to end: a rank hung in a collective"
