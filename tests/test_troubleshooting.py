"""Every error of the README's troubleshooting table, met as a user meets it: through the
``selfsup`` command, ending with one ``selfsup: error:`` line that names the problem and the fix, with
no traceback and nothing half-written. (Faults during training, full disks, kills and DDP failures
are in tests/test_faults.py and tests/test_resume.py; ``--ckpt_path`` refusals in
tests/test_run_checkpoints.py.)"""

from __future__ import annotations

import pytest
import torch

from selfsup.cli import main, run
from tests.helpers import REPO, Payload, write_image_folder

QUICKSTART = str(REPO / "configs/quickstart.yaml")
FINETUNE = str(REPO / "configs/finetune/cifar10_vit_tiny_linear.yaml")
TINY = ["--model.init_args.encoder_kwargs={depth: 1}", "--trainer.callbacks=[]", "--trainer.max_steps=1"]


def last_error(args, capsys, code: int = 1) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    # the one-line error path (no traceback; --debug would show it)
    assert lines[-2] == "(run with --debug or SELFSUP_DEBUG=1 for the traceback)"
    return lines[-1]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """An export of a 1-step quickstart run (16 px)."""
    work = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        run(
            [
                "fit",
                "-c",
                QUICKSTART,
                *TINY,
                "--data.init_args.train_subset=32",
                "--data.init_args.batch_size=32",
            ]
        )
        run(["export", "runs/quickstart/version_0/checkpoints/last.ckpt", "--out", str(work / "export")])
    return work / "export"


def folder_args(root) -> list[str]:
    return ["fit", "-c", QUICKSTART, *TINY, "--data.init_args.source=folder", f"--data.init_args.root={root}"]


def test_a_corrupt_image_is_named_with_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_image_folder(tmp_path / "data", per_class=2)
    (root / "train" / "cat" / "zero.jpg").write_bytes(b"")
    line = last_error([*folder_args(root), "--data.init_args.batch_size=6"], capsys)
    assert line.startswith("selfsup: error: Cannot read image '") and "zero.jpg': the file is empty" in line
    assert "data.skip_corrupt: true" in line


@pytest.mark.parametrize("layout", ["no class folders", "an empty class folder", "no data root"])
def test_a_data_folder_of_the_wrong_layout_names_the_folder_and_the_layout(
    tmp_path, capsys, monkeypatch, layout
):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    if layout == "no class folders":
        (root / "train").mkdir(parents=True)
        expected = "'data/train' has no class folders. Expected layout: root/train/<class>/<image>"
    elif layout == "an empty class folder":
        write_image_folder(root, per_class=1)
        (root / "train" / "bird").mkdir()
        expected = "Class folder 'data/train/bird' contains no images"
    else:
        expected = "Data root 'data' does not exist. Expected layout: root/train/<class>/<image>"
    line = last_error(folder_args("data"), capsys)
    assert expected in line
    assert not list(tmp_path.rglob("version_*"))  # no run folder left behind


@pytest.mark.parametrize(
    "config, option, expected",
    [
        (
            "mae/digits.yaml",
            "--model.init_args.mask_ratio=1.5",
            "mask_ratio must lie strictly between 0 and 1",
        ),
        (
            "quickstart.yaml",
            "--model.init_args.temperature=0",
            "temperature must be a finite number > 0, got 0.0",
        ),
        (
            "quickstart.yaml",
            "--model.init_args.encoder=vit_tiny_patch16_2244",
            "Unknown timm model name 'vit_tiny_patch16_2244'. Did you mean 'vit_tiny_patch16_224'",
        ),
        (
            "quickstart.yaml",
            "--data.init_args.batch_size=1",
            "InfoNCELoss needs at least 2 images in the (global) batch: with a batch of 1 there are no "
            "negatives. Increase the batch size.",
        ),
    ],
)
def test_a_bad_model_setting_is_one_line(tmp_path, capsys, monkeypatch, config, option, expected):
    monkeypatch.chdir(tmp_path)
    line = last_error(["fit", "-c", str(REPO / "configs" / config), *TINY, option], capsys)
    assert line.startswith("selfsup: error: ") and expected in line


def test_a_checkpoint_that_pickles_code_is_refused_not_executed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "selfsup": Payload(str(tmp_path / "executed"))}, tmp_path / "evil.ckpt")
    line = last_error(["export", "evil.ckpt", "--out", "out"], capsys)
    assert "'evil.ckpt' holds pickled objects other than tensors" in line and "\x1b[" not in line
    assert not (tmp_path / "executed").exists() and not (tmp_path / "out").exists()


def test_an_export_folder_without_its_files_says_how_to_recreate_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken").mkdir()
    root = write_image_folder(tmp_path / "data", per_class=2, size=16)
    args = ["fit", "-c", FINETUNE, "--model.init_args.backbone=broken", f"--data.init_args.root={root}"]
    line = last_error(args, capsys)
    assert "export folder 'broken' lacks config.json, model.safetensors" in line
    assert "selfsup export CKPT --out DIR" in line


@pytest.mark.parametrize(
    "option, expected",
    [
        (
            "--model.init_args.num_classes=3",
            "the data has 2 classes but the classification head has num_classes=3: set model.init_args.num_classes: 2.",
        ),
        (
            "--model.init_args.strategy=lorra",
            "unknown fine-tuning strategy 'lorra'; choose one of linear, full, partial, bitfit, lora",
        ),
    ],
)
def test_a_fine_tune_that_does_not_fit_its_data_or_strategies(
    tmp_path, capsys, monkeypatch, export_dir, option, expected
):
    monkeypatch.chdir(tmp_path)
    root = write_image_folder(tmp_path / "data", per_class=2, size=16)
    args = [
        "fit",
        "-c",
        FINETUNE,
        f"--model.init_args.backbone={export_dir}",
        f"--data.init_args.root={root}",
        "--data.init_args.image_size=16",
        "--data.init_args.batch_size=4",
        "--trainer.max_steps=1",
        option,
    ]
    line = last_error(args, capsys)
    assert line.startswith("selfsup: error: ") and expected in line


def test_a_nan_loss_stops_the_run_naming_the_step_and_the_kept_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    poison = "--trainer.callbacks=[{class_path: tests.faulty.PoisonWeights, init_args: {step: 2}}]"
    args = [
        "fit",
        "-c",
        QUICKSTART,
        "--model.init_args.encoder_kwargs={depth: 1}",
        "--data.init_args.train_subset=64",
        "--data.init_args.batch_size=32",
        "--trainer.max_epochs=3",
        poison,
    ]
    line = last_error(args, capsys)
    assert line.startswith("selfsup: error: the training loss or a gradient is NaN / infinite at step 2")
    kept = "runs/quickstart/version_0/checkpoints/last.ckpt"
    assert f"Last good checkpoint: '{kept}' (kept)" in line and "skip_nonfinite_steps" in line
    last = torch.load(tmp_path / kept, weights_only=True)
    assert last["global_step"] == 2 and all(torch.isfinite(v).all() for v in last["state_dict"].values())
