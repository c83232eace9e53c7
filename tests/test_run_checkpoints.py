"""What a run leaves on disk, checked through the ``selfsup`` command: ``last.ckpt`` holds the final
weights of every method whatever the checkpoint monitor does, a resume continues from it, no "best"
is kept by a meaningless monitor, and ``--ckpt_path`` refuses what it cannot resume in one line,
leaving no empty run folder behind."""

from __future__ import annotations

import pytest
import torch

from selfsup.cli import main, run
from tests.helpers import REPO

TINY = [
    "--data.init_args.train_subset=32",
    "--data.init_args.val_subset=32",
    "--data.init_args.batch_size=32",
    "--model.init_args.encoder_kwargs={depth: 1}",
    "--trainer.callbacks=[]",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
STEPS_PER_EPOCH = 1  # 32 images in batches of 32
# A monitored value that is best in the first epoch and never again: Lightning 2.6 then froze
# last.ckpt at that epoch (it writes last.ckpt only with a new top-k checkpoint).
NEVER_IMPROVES = ["--checkpoint.monitor=epoch", "--checkpoint.mode=min", "--checkpoint.save_top_k=1"]
CONFIGS = {
    "simclr": "quickstart.yaml",
    "mae": "mae/digits.yaml",
    "dino": "dino/digits.yaml",
    "mocov3": "mocov3/digits.yaml",
    "distill": "distill/digits.yaml",
}


def fit(config: str, *extra: str):
    return run(["fit", "-c", str(REPO / "configs" / config), *TINY, *extra])


def checkpoints(root, name):
    return sorted(p.name for p in (root / "runs" / name / "version_0" / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 1-epoch quickstart checkpoint, the teacher of the distillation run."""
    work = tmp_path_factory.mktemp("teacher")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        fit("quickstart.yaml", "--trainer.max_epochs=1")
    return work / "runs/quickstart/version_0/checkpoints/last.ckpt"


@pytest.mark.parametrize("method", list(CONFIGS))
def test_last_ckpt_holds_the_final_weights_whatever_the_monitor(method, tmp_path, monkeypatch, teacher):
    monkeypatch.chdir(tmp_path)
    extra = [f"--model.init_args.teacher={teacher}"] if method == "distill" else []
    cli = fit(CONFIGS[method], "--trainer.max_epochs=2", *NEVER_IMPROVES, *extra)
    name = cli.trainer.logger.name
    last = torch.load(tmp_path / "runs" / name / "version_0/checkpoints/last.ckpt", weights_only=True)
    assert last["selfsup"]["method"] == method
    assert last["global_step"] == 2 * STEPS_PER_EPOCH == cli.trainer.global_step
    final = cli.model.state_dict()
    for key, value in last["state_dict"].items():
        assert torch.equal(value, final[key]), key
    # the monitor's best stays the first epoch, named by epochs completed
    assert checkpoints(tmp_path, name) == ["best-epoch=001-step=000001.ckpt", "last.ckpt"]


def test_a_resume_from_last_continues_where_the_run_ended(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit("quickstart.yaml", "--trainer.max_epochs=3", *NEVER_IMPROVES)
    cli = fit("quickstart.yaml", "--trainer.max_epochs=4", *NEVER_IMPROVES, "--ckpt_path=last")
    assert cli.trainer.global_step == 4 * STEPS_PER_EPOCH  # one more epoch, not three
    last = torch.load(tmp_path / "runs/quickstart/version_1/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 4 * STEPS_PER_EPOCH and last["epoch"] == 3


def test_by_default_only_last_ckpt_is_kept_and_a_knn_monitor_chooses_the_best(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit("quickstart.yaml", "--trainer.max_epochs=2")
    assert checkpoints(tmp_path, "quickstart") == ["last.ckpt"]  # no "best" by the training loss
    knn = "--trainer.callbacks=[{class_path: selfsup.eval.KNNMonitor, init_args: {max_train_samples: 32}}]"
    cli = fit("mocov3/digits.yaml", "--trainer.max_epochs=2", knn)
    assert cli.trainer.checkpoint_callback.monitor == "val/knn_top1"
    assert cli.trainer.checkpoint_callback.mode == "max"
    names = checkpoints(tmp_path, "mocov3_digits")
    assert "last.ckpt" in names and any(n.startswith("best-epoch=00") for n in names)


def _one_line_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    # the one-line error path (no traceback; --debug would show it)
    assert lines[-2] == "(run with --debug or SELFSUP_DEBUG=1 for the traceback)"
    return lines[-1]


def test_ckpt_path_refusals_name_the_file_and_leave_no_run_folder(tmp_path, monkeypatch, capsys, teacher):
    monkeypatch.chdir(tmp_path)
    quickstart = ["fit", "-c", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.max_epochs=1"]
    # a truncated checkpoint and a file that is no checkpoint
    data = teacher.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    for name in ("cut.ckpt", "notes.ckpt"):
        line = _one_line_error([*quickstart, f"--ckpt_path={name}"], capsys)
        assert line.startswith(f"selfsup: error: '{name}' is not a readable PyTorch checkpoint (truncated")
    line = _one_line_error([*quickstart, "--ckpt_path=missing.ckpt"], capsys)
    assert "'missing.ckpt' does not exist" in line and "--ckpt_path last" in line
    # another method's checkpoint: which method it holds, and the config that resumes it
    dino = ["fit", "-c", str(REPO / "configs/dino/digits.yaml"), *TINY, "--trainer.max_steps=1"]
    run(dino)
    dino_last = "runs/dino_digits/version_0/checkpoints/last.ckpt"
    line = _one_line_error([*quickstart, f"--ckpt_path={dino_last}"], capsys)
    assert line == (
        f"selfsup: error: '{dino_last}' is a dino checkpoint, but this config trains selfsup.SimCLR (simclr). "
        "Resume it with the config of the run that wrote it: selfsup fit -c "
        f"runs/dino_digits/version_0/config.yaml --ckpt_path {dino_last}"
    )
    # a checkpoint whose weights do not fit the model the config builds
    odd = torch.load(teacher, weights_only=True)
    odd["state_dict"]["start_encoder.cls_token"] = torch.zeros(1, 1, 192)
    torch.save(odd, tmp_path / "odd.ckpt")
    line = _one_line_error([*quickstart, "--ckpt_path=odd.ckpt"], capsys)
    assert "'odd.ckpt' does not fit the model this config builds" in line
    assert "1 weights this model lacks (start_encoder.*)" in line
    assert not (tmp_path / "runs" / "quickstart").exists()  # no empty version folder


def test_a_continual_run_resumes_from_last_with_its_own_start_encoder(tmp_path, monkeypatch, teacher, capsys):
    """``--ckpt_path last`` with the plain config takes the model's arguments from the checkpoint:
    the frozen start encoder of ``init_from`` + ``continual_weight`` is rebuilt, not refused."""
    monkeypatch.chdir(tmp_path)
    continual = [f"--model.init_args.init_from={teacher}", "--model.init_args.continual_weight=1.0"]
    fit("quickstart.yaml", "--trainer.max_epochs=1", *continual)
    capsys.readouterr()
    cli = fit("quickstart.yaml", "--trainer.max_epochs=2", "--ckpt_path=last")
    said = capsys.readouterr().out
    assert "they differ from the config in: continual_weight, init_from" in said  # said, not silent
    assert cli.trainer.global_step == 2 * STEPS_PER_EPOCH
    assert cli.model.continual_weight == 1.0 and hasattr(cli.model, "start_encoder")
    assert sorted(p.name for p in (tmp_path / "runs/quickstart").iterdir()) == ["version_0", "version_1"]


def test_a_run_that_fails_before_its_first_step_leaves_no_version_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/quickstart/version_0").mkdir(parents=True)
    (tmp_path / "runs/quickstart/version_0/notes.txt").write_text("a user's file")  # an earlier run's folder
    fail = "--trainer.callbacks=[{class_path: tests.faulty.FailOnRank, init_args: {rank: 0, step: 0}}]"
    line = _one_line_error(["fit", "-c", str(REPO / "configs/quickstart.yaml"), *TINY, fail], capsys)
    assert "injected failure on rank 0 at step 0" in line
    # the failed run's folder (config.yaml only) is gone; nothing else was touched
    assert sorted(p.name for p in (tmp_path / "runs/quickstart").iterdir()) == ["version_0"]
    assert (tmp_path / "runs/quickstart/version_0/notes.txt").read_text() == "a user's file"
