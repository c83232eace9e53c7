"""One ``load_encoder`` for every source a user can name: checkpoints (pretraining and fine-tune,
on disk or loaded), export folders, plain timm / Hugging Face folders, timm's own loaders, and timm
names (random, or with a weights file). Every consumer builds its backbone through it."""

from __future__ import annotations

import ast
import json

import pytest
import torch
from safetensors.torch import save_file

from selfsup.contract import CheckpointError, load_checkpoint
from selfsup.export import export
from selfsup.load import declared_record, load_encoder
from tests.helpers import REPO

X = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
TINY = {"img_size": 16, "patch_size": 4, "depth": 1}


@pytest.fixture(scope="module")
def sources(tiny_runs, tmp_path_factory):
    """Every kind of source, each holding the SimCLR run's final encoder."""
    from timm.models import save_for_hf

    work = tmp_path_factory.mktemp("sources")
    checkpoint = tiny_runs["simclr"]["run_dir"] / "checkpoints" / "last.ckpt"
    folder = export(checkpoint, work / "export")
    plain = work / "hf_folder"  # what timm's save_for_hf writes, with no selfsup.json
    save_for_hf(load_encoder(checkpoint), str(plain), safe_serialization=True)
    weights = work / "weights.safetensors"
    save_file(load_encoder(checkpoint).state_dict(), weights)
    return {
        "checkpoint": checkpoint,
        "loaded checkpoint": load_checkpoint(checkpoint),
        "export folder": folder,
        "local-dir: export": f"local-dir:{folder}",
        "timm folder without selfsup.json": plain,
        "local-dir: timm folder": f"local-dir:{plain}",
        "timm name + pretrained_file": weights,
    }


@pytest.mark.parametrize(
    "kind",
    [
        "checkpoint",
        "loaded checkpoint",
        "export folder",
        "local-dir: export",
        "timm folder without selfsup.json",
        "local-dir: timm folder",
        "timm name + pretrained_file",
    ],
)
def test_every_source_gives_the_trained_encoder(sources, tiny_runs, kind):
    source = sources[kind]
    if kind == "timm name + pretrained_file":
        encoder = load_encoder("vit_tiny_patch16_224", pretrained_file=source, **TINY)
    else:
        encoder = load_encoder(source)
    assert not encoder.training
    with torch.no_grad():
        torch.testing.assert_close(encoder(X), tiny_runs["simclr"]["module"].features(X), rtol=0, atol=1e-6)


def test_timm_names_build_random_models_of_the_asked_shape():
    vit = load_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=1, pool="avg")
    assert vit.patch_embed.img_size == (16, 16) and len(vit.blocks) == 1 and vit.global_pool == "avg"
    assert vit(X).shape == (3, 192)
    cnn = load_encoder("resnet18", img_size=16)  # a CNN takes any size: img_size has nothing to set
    assert cnn(X).shape == (3, cnn.num_features)
    with pytest.raises(ValueError, match="patch_size applies to ViT backbones"):
        load_encoder("resnet18", patch_size=4)
    with pytest.raises(ValueError, match="Did you mean 'vit_tiny_patch16_224'"):
        load_encoder("vit_tiny_patch16_22")


def test_a_finetune_checkpoint_gives_its_plain_backbone():
    encoder = load_encoder(REPO / "tests" / "fixtures" / "format1_finetune.ckpt")
    names = [name for name, _ in encoder.named_parameters()]
    assert names and not any("lora" in n or "head" in n for n in names)
    assert declared_record(REPO / "tests" / "fixtures" / "format1_simclr.ckpt") == ("simclr", "token")


def test_wrong_sources_are_one_line_errors_naming_the_file(sources, tmp_path, monkeypatch):
    with pytest.raises(
        CheckpointError, match=r"vit_tiny_patch16_224 encoder with patch_size=4, but patch_size=16"
    ):
        load_encoder(sources["export folder"], patch_size=16)
    with pytest.raises(CheckpointError, match="is a simclr checkpoint, but a mae checkpoint was expected"):
        load_encoder(sources["checkpoint"], method="mae")
    with pytest.raises(
        CheckpointError, match="holds a vit_tiny_patch16_224 model, but vit_small_patch16_224"
    ):
        load_encoder(f"local-dir:{sources['export folder']}", name="vit_small_patch16_224")
    with pytest.raises(FileNotFoundError, match="weights.pth' does not exist"):
        load_encoder("vit_tiny_patch16_224", pretrained_file=tmp_path / "weights.pth")
    with pytest.raises(FileNotFoundError, match="local-dir:.*nowhere' does not exist"):
        load_encoder(f"local-dir:{tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(tmp_path / "run" / "export")
    # the weights of another architecture: timm's own message, in one line, naming the file
    with pytest.raises(CheckpointError, match=r"weights of 'vit_small_patch16_224' from the file .*weights"):
        load_encoder("vit_small_patch16_224", pretrained_file=sources["timm name + pretrained_file"], **TINY)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224"}))
    with pytest.raises(CheckpointError, match="lacks model.safetensors"):
        load_encoder(half)
    # a name's weights from the hub: this machine has none cached, and says what to do instead
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import: the constant too, or it waits on the network
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(
        CheckpointError, match="pass the weights file as pretrained_file|Pass the weights file"
    ):
        load_encoder("vit_tiny_patch16_224.augreg_in21k", pretrained=True)


# where a backbone (or a model built around one) may be constructed, and why
BUILDERS = {
    "selfsup/load.py": "the one loader",
    "selfsup/encoders/vit.py": "create_encoder: a random timm ViT from a name (what load_encoder calls)",
    "selfsup/contract.py": "ModelSpec.build: the recorded architecture, for load_encoder",
    "selfsup/methods/base.py": "a method's own trainable encoder, from a name",
    "selfsup/finetune/export.py": "the timm classifier (backbone + linear head) that a fine-tune exports",
    "selfsup/compress/variant_pruned.py": "the pruned architecture, smaller than the export's",
    "selfsup/compress/int8.py": "the structure that int8 weights are loaded into",
}


def test_backbones_are_built_in_one_place():
    """No module besides those in BUILDERS calls ``timm.create_model``, ``create_encoder`` or
    ``ModelSpec.build``: everything else goes through ``load_encoder``."""
    builders = {"create_model", "create_encoder"}
    found = {}
    for path in sorted((REPO / "selfsup").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            spec_build = (
                name == "build" and isinstance(func, ast.Attribute) and "backbone" in ast.unparse(func.value)
            )
            if name in builders or spec_build:
                found.setdefault(str(path.relative_to(REPO)), []).append(
                    f"{ast.unparse(func)} (line {node.lineno})"
                )
    outside = {path: calls for path, calls in found.items() if path not in BUILDERS}
    assert outside == {}, f"build backbones through selfsup.load.load_encoder: {outside}"
    assert "selfsup/load.py" in found and "selfsup/contract.py" not in outside


def test_an_export_written_by_selfsup_0_2_0_still_loads_with_the_same_features():
    """``tests/fixtures/export_v0_2_0_simclr`` was written by ``selfsup export`` at 0.2.0 (before
    ``load_encoder`` moved to ``selfsup.load``) from ``format1_simclr.ckpt``; it loads through
    ``load_encoder`` and plain timm and gives the features recorded with that checkpoint."""
    from selfsup.augment.normalize import Normalize

    folder = REPO / "tests" / "fixtures" / "export_v0_2_0_simclr"
    recorded = torch.load(REPO / "tests" / "fixtures" / "format1_simclr_features.pt", weights_only=True)
    meta = json.loads((folder / "selfsup.json").read_text())
    assert meta["format"] == 2 and meta["method"] == "simclr"
    x = Normalize(meta["mean"], meta["std"])(recorded["x"])
    for source in (folder, f"local-dir:{folder}"):
        with torch.no_grad():
            torch.testing.assert_close(load_encoder(source)(x), recorded["features"], rtol=0, atol=1e-6)
