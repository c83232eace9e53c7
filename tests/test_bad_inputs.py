"""The bad-input matrix: each case raises the documented error type with a message that names the
problem and the fix, and writes nothing half-way. The README's troubleshooting table lists them."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup import MAE, FineTune, ImageDataModule
from selfsup.checkpoint import CheckpointError, load_checkpoint
from selfsup.data import ImageDecodeError, load_image
from selfsup.encoders import create_encoder
from selfsup.export import export, load_encoder
from selfsup.losses import InfoNCELoss
from tests.helpers import REPO, write_image_folder
from tests.test_cli import selfsup_command


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


def test_image_size_not_divisible_by_patch_size():
    with pytest.raises(ValueError, match="Image size 30x30 is not divisible by the patch size 4x4: choose"):
        create_encoder("vit_tiny_patch16_224", img_size=30, patch_size=4, depth=1)


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_mask_ratio_outside_zero_one(ratio):
    with pytest.raises(ValueError, match="mask_ratio must lie strictly between 0 and 1"):
        MAE(img_size=16, patch_size=4, encoder_kwargs={"depth": 1}, mask_ratio=ratio)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_not_positive(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        InfoNCELoss(temperature)


def test_infonce_with_batch_size_one():
    with pytest.raises(ValueError, match="batch of 1 there are no negatives. Increase the batch size"):
        InfoNCELoss()(torch.randn(1, 8), torch.randn(1, 8))


def test_config_key_misspelt(tmp_path):
    result = subprocess.run(
        selfsup_command()
        + ["fit", "-c", str(REPO / "configs/quickstart.yaml"), "--model.init_args.mask_ration=0.5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "mask_ration" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


def test_unknown_timm_model_name():
    with pytest.raises(ValueError, match="Unknown timm model name 'vit_tiny_patch16_2244'. Did you mean"):
        create_encoder("vit_tiny_patch16_2244")


def test_checkpoint_of_another_method_and_architecture(tiny_runs):
    simclr = tiny_runs["simclr"]["run_dir"] / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="is a simclr checkpoint, but a mae checkpoint was expected"):
        load_encoder(simclr, method="mae")
    with pytest.raises(
        CheckpointError, match="holds a vit_tiny_patch16_224 encoder with name=.*but name='vit_base"
    ):
        load_encoder(simclr, name="vit_base_patch16_224")


def test_truncated_checkpoint_and_non_checkpoint_file(tiny_runs, tmp_path):
    good = (tiny_runs["simclr"]["run_dir"] / "checkpoints" / "last.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cut.ckpt' is not a readable PyTorch checkpoint .*truncated"):
        load_checkpoint(tmp_path / "cut.ckpt")
    (tmp_path / "notes.ckpt").write_text("these are my notes")
    with pytest.raises(CheckpointError, match="notes.ckpt' is not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "notes.ckpt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "plain.ckpt")
    with pytest.raises(
        CheckpointError, match="is not a selfsup training checkpoint .*Pass a checkpoint written by"
    ):
        load_checkpoint(tmp_path / "plain.ckpt")


class Payload:
    """Unpickling this would create a file: a stand-in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_with_an_arbitrary_object_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"
    torch.save({"state_dict": {}, "selfsup": Payload(str(marker))}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refuses to execute them"):
        load_checkpoint(tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError):
        load_encoder(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_export_folder_missing_a_file(tiny_runs, tmp_path):
    out = export(tiny_runs["mae"]["run_dir"] / "checkpoints" / "last.ckpt", tmp_path / "export")
    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"lacks config.json .*Re-create it with `selfsup export"):
        load_encoder(out)


def test_wrong_number_of_classes_for_a_finetune_head(tmp_path):
    import lightning as L

    module = FineTune(
        "vit_tiny_patch16_224", num_classes=3, img_size=16, patch_size=4, backbone_kwargs={"depth": 1}
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(
        ValueError, match="the data has 10 classes but the classification head has num_classes=3: set"
    ):
        trainer.fit(module, ImageDataModule(image_size=16, batch_size=8, num_workers=0, train_subset=16))


def test_unknown_finetune_strategy():
    with pytest.raises(ValueError, match="unknown fine-tuning strategy 'qlora'; choose one of linear, full"):
        FineTune(
            "vit_tiny_patch16_224", strategy="qlora", img_size=16, patch_size=4, backbone_kwargs={"depth": 1}
        )


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
