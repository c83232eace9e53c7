"""The bad-input matrix: each case raises the documented error type with a message that names the
problem and the fix, and writes nothing half-way. The README's troubleshooting table lists them.

Cases that the unit tests of a module already cover (patch sizes, mask ratios, temperatures,
unknown model names, checkpoints of the wrong method, kind or format, truncated checkpoints,
incomplete exports, class counts, strategies) live there only and are not repeated here."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from selfsup import ImageDataModule
from selfsup.cli import main
from selfsup.contract import CheckpointError, load_checkpoint
from selfsup.data import ImageDecodeError, load_image
from selfsup.export import load_encoder
from tests.helpers import REPO, Payload, write_image_folder


def broken_image(tmp_path, kind):
    path = tmp_path / f"{kind}.jpg"
    if kind == "corrupt":
        path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    elif kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "zero-byte"])
def test_unreadable_images(tmp_path, kind):
    path = broken_image(tmp_path, kind)
    with pytest.raises(ImageDecodeError, match=rf"Cannot read image '{path}'.*skip_corrupt: true"):
        load_image(path, 16)


def test_folder_without_images_and_empty_class_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="has no class folders. Expected layout: root/train/<class>/<image>"):
        ImageDataModule("folder", str(tmp_path), num_workers=0).setup()
    write_image_folder(tmp_path / "data", classes=("a",), per_class=1, splits=("train",))
    (tmp_path / "data" / "train" / "empty").mkdir()
    with pytest.raises(
        ValueError, match="Class folder '.*empty' contains no images.*Add images or remove the folder"
    ):
        ImageDataModule("folder", str(tmp_path / "data"), num_workers=0).setup()


def test_missing_data_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="Data root '.*nope' does not exist. Expected layout"):
        ImageDataModule("folder", str(tmp_path / "nope"), num_workers=0).setup()


@pytest.mark.parametrize(
    "kind", ["16-bit PNG", "CMYK JPEG", "palette PNG", "RGBA PNG", "smaller than the crop"]
)
def test_unusual_images_load_correctly(tmp_path, kind):
    path = tmp_path / ("x.jpg" if "JPEG" in kind else "x.png")
    if kind == "16-bit PNG":
        Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(path)
        expected = round(40000 / 65535 * 255)
    elif kind == "CMYK JPEG":
        Image.new("CMYK", (20, 20), (0, 0, 0, 0)).save(path, quality=100)
        expected = 255
    elif kind == "palette PNG":
        Image.new("RGB", (20, 20), (90, 90, 90)).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
        expected = 90
    elif kind == "RGBA PNG":
        Image.new("RGBA", (20, 20), (70, 70, 70, 0)).save(path)
        expected = 70
    else:
        Image.new("RGB", (3, 5), (200, 200, 200)).save(path)
        expected = 200
    out = load_image(path, 16)
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
    assert (out.float() - expected).abs().max() <= 3


def test_config_key_misspelt_is_one_line_naming_the_key_and_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(REPO / "configs/quickstart.yaml"), "--model.init_args.temprature=0.5"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("selfsup: error: model.init_args.temprature: selfsup.SimCLR has no argument")
    assert "Did you mean 'temperature'?" in last
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.parametrize(
    "option, suggestion",
    [("--trainer.max_stesp=3", "--trainer.max_steps"), ("--checkpoint.montor=x", "--checkpoint.monitor")],
)
def test_a_misspelt_trainer_or_checkpoint_key_gets_a_suggestion(
    tmp_path, monkeypatch, capsys, option, suggestion
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(REPO / "configs/quickstart.yaml"), option])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"selfsup: error: unrecognized option '{option.split('=')[0]}'. Did you mean '{suggestion}'? "
        "`selfsup fit --help` lists the options."
    )
    # the same key misspelt in a config file
    (tmp_path / "bad.yaml").write_text("trainer:\n  max_stesp: 3\n")
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(REPO / "configs/quickstart.yaml"), "-c", str(tmp_path / "bad.yaml")])
    assert "Did you mean '--trainer.max_steps'?" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "option, message",
    [
        ("--model.init_args.optim.base_lr=abc", "model.init_args.optim.base_lr: expected float, got 'abc'."),
        ("--model.init_args.temperature=abc", "model.init_args.temperature: expected float, got 'abc'."),
        ("--data.init_args.batch_size=abc", "data.init_args.batch_size: expected int, got 'abc'."),
        ("--trainer.max_epochs=abc", "trainer.max_epochs: expected int or null, got 'abc'."),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_the_type_and_the_value(
    tmp_path, monkeypatch, capsys, option, message
):
    """jsonargparse nests one block per union it tried; the innermost holds what the user needs
    (before, the line ended at 'Parser key "optim.base_lr":' with neither type nor value)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(REPO / "configs/quickstart.yaml"), option])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"selfsup: error: {message}"
    assert not (tmp_path / "runs").exists()


def test_null_for_a_nested_field_on_the_command_line_gets_the_spelling_that_works(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs/dino/digits.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", config, "--model.init_args.optim.weight_decay_end=null"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    fix = "--model.init_args.optim '{weight_decay_end: null}'"
    assert last.startswith("selfsup: error: model.init_args.optim.weight_decay_end: null on the command line")
    assert f"Write {fix} instead" in last
    # the spelling it gives parses, and keeps the config's other optimiser settings
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", config, "--model.init_args.optim", "{weight_decay_end: null}", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["optim"]
    assert (
        printed["weight_decay_end"] is None and printed["base_lr"] == 1e-3 and printed["weight_decay"] == 0.04
    )
    assert not (tmp_path / "runs").exists()


def test_a_wrong_value_ends_with_selfsups_message_and_no_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", str(REPO / "configs/quickstart.yaml"), "--model.init_args.patch_size=5"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "selfsup: error: Image size 16x16 is not divisible by the patch size 5x5: choose an image size that "
        "is a multiple of 5 (e.g. 15) or a patch size that divides 16."
    )
    assert "Traceback" not in err
    with pytest.raises(
        ValueError, match="not divisible by the patch size 5x5"
    ):  # --debug: the real exception
        main([*args, "--debug"])


def test_other_commands_end_errors_the_same_way(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("selfsup: error: checkpoint '")
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", str(tmp_path / "nothing")])
    assert exit_info.value.code == 1
    assert "is neither a checkpoint file nor a folder" in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit) as exit_info:
        main(["fti", "-c", "x.yaml"])
    assert "unknown command 'fti'. Did you mean 'fit'?" in str(exit_info.value.code)
    assert not (tmp_path / "out").exists()


def test_pickle_with_an_arbitrary_object_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"
    torch.save({"state_dict": {}, "selfsup": Payload(str(marker))}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refuses to execute them"):
        load_checkpoint(tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError):
        load_encoder(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_no_torch_load_without_weights_only_and_no_shell_in_the_package():
    """Security by inspection: every torch.load in selfsup says weights_only=True, exports write
    safetensors only, and nothing hands a path to a shell."""
    for path in (REPO / "selfsup").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
            assert "shell=True" not in line and "os.system(" not in line and "os.popen(" not in line, path
        assert "torch.save(" not in text or path.name == "checkpoint.py", f"{path} writes pickles"
    exported = (REPO / "selfsup" / "export.py").read_text() + (
        REPO / "selfsup" / "finetune" / "export.py"
    ).read_text()
    assert "safe_serialization=True" in exported and "torch.save" not in exported
