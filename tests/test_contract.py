"""The checkpoint and export contract: one metadata layout for every kind of checkpoint, one spec →
model builder, clear errors for every wrong checkpoint, and checkpoints of selfsup 0.1 (format 1,
``tests/fixtures``) still loading with the same outputs."""

import subprocess
import sys
import textwrap

import pytest
import torch

from selfsup.augment.normalize import Normalize
from selfsup.contract import (
    CHECKPOINT_KEY,
    FORMAT,
    CheckpointError,
    CheckpointMeta,
    ModelSpec,
    load_checkpoint,
    plain_backbone_state,
    read_meta,
)
from selfsup.encoders import create_encoder
from selfsup.export import export
from selfsup.load import load_encoder
from tests.helpers import REPO

FIXTURES = REPO / "tests" / "fixtures"


@pytest.mark.parametrize("method", ["simclr", "mae"])
def test_format_1_pretraining_checkpoints_load_with_the_same_features(method):
    checkpoint = load_checkpoint(FIXTURES / f"format1_{method}.ckpt")
    meta = read_meta(checkpoint)
    assert meta.format == FORMAT and meta.kind == "pretrain" and meta.method == method
    assert meta.pool == ("token" if method == "simclr" else "avg")
    recorded = torch.load(FIXTURES / f"format1_{method}_features.pt", weights_only=True)
    encoder = load_encoder(checkpoint)
    with torch.no_grad():
        features = encoder(Normalize(meta.mean, meta.std)(recorded["x"]))
    torch.testing.assert_close(features, recorded["features"], rtol=0, atol=1e-6)


def test_format_1_finetune_checkpoint_rebuilds_with_the_same_logits_and_probes_its_backbone():
    from selfsup import FineTune

    path = FIXTURES / "format1_finetune.ckpt"
    module = FineTune.from_checkpoint(path)
    recorded = torch.load(FIXTURES / "format1_finetune_logits.pt", weights_only=True)
    with torch.no_grad():
        logits = module(module.normalize(recorded["x"]))
    torch.testing.assert_close(logits, recorded["logits"], rtol=0, atol=1e-5)
    # the backbone of a (LoRA) fine-tune loads as a plain timm model: what `selfsup probe` reads
    backbone = load_encoder(path)
    assert not any("lora" in name for name, _ in backbone.named_parameters())
    with torch.no_grad():
        merged = backbone.forward_features(module.normalize(recorded["x"]))
        original = module.strategy.encode(module.encoder, module.normalize(recorded["x"]))[0]
    torch.testing.assert_close(merged, original, rtol=1e-5, atol=1e-5)


def test_every_wrong_checkpoint_is_a_checkpoint_error_naming_the_problem_and_the_fix(tmp_path):
    finetune = FIXTURES / "format1_finetune.ckpt"
    simclr = FIXTURES / "format1_simclr.ckpt"
    meta = read_meta(load_checkpoint(finetune))
    with pytest.raises(
        CheckpointError, match="is a fine-tune checkpoint .* pretraining checkpoint is needed"
    ):
        meta.require(finetune, kind="pretrain")
    with pytest.raises(CheckpointError, match="is a simclr checkpoint, but a mae checkpoint was expected"):
        read_meta(load_checkpoint(simclr)).require(simclr, method="mae")
    with pytest.raises(CheckpointError, match="not a fine-tune checkpoint"):
        read_meta(load_checkpoint(simclr)).require(simclr, kind="finetune")
    # a newer format than this selfsup reads
    newer = load_checkpoint(simclr)
    newer[CHECKPOINT_KEY]["format"] = FORMAT + 1
    torch.save(newer, tmp_path / "newer.ckpt")
    with pytest.raises(CheckpointError, match=r"newer selfsup .*Upgrade selfsup"):
        load_checkpoint(tmp_path / "newer.ckpt")
    # a truncated file
    data = simclr.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(tmp_path / "cut.ckpt")
    # a damaged record
    damaged = load_checkpoint(simclr)
    del damaged[CHECKPOINT_KEY]["backbone"]
    with pytest.raises(CheckpointError, match="damaged"):
        CheckpointMeta.from_dict(damaged[CHECKPOINT_KEY], "x.ckpt")


def test_resuming_another_methods_checkpoint_is_refused():
    from selfsup import MAE

    model = MAE("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 1})
    checkpoint = torch.load(FIXTURES / "format1_simclr.ckpt", weights_only=True)
    with pytest.raises(CheckpointError, match="is a simclr checkpoint, but a mae checkpoint was expected"):
        model.on_load_checkpoint(checkpoint)


def test_model_spec_rebuilds_vits_and_cnns():
    encoder = create_encoder("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=3, drop_path_rate=0.1)
    spec = ModelSpec.from_model(encoder)
    assert (spec.name, spec.img_size, spec.patch_size, spec.vit) == ("vit_tiny_patch16_224", 32, 4, True)
    assert spec.model_args["depth"] == 3 and "num_classes" not in spec.model_args
    rebuilt = spec.build()
    assert [(n, p.shape) for n, p in rebuilt.named_parameters()] == [
        (n, p.shape) for n, p in encoder.named_parameters()
    ]
    assert spec.build(num_classes=7).get_classifier().out_features == 7
    import timm

    cnn = ModelSpec.from_model(timm.create_model("resnet18", num_classes=0))
    assert not cnn.vit and cnn.img_size is None and cnn.build().num_features == 512


def test_a_finetunes_backbone_weights_go_through_its_strategy():
    """The contract names no strategy: a fine-tune's weights become plain timm weights through the
    fine-tune's own strategies (LoRA merged, adapter and prompt refused, the others unchanged)."""
    a, b, w, bias = torch.randn(2, 3), torch.randn(5, 2), torch.randn(5, 3), torch.randn(5)
    checkpoint = {
        "state_dict": {
            "encoder.fc.base.weight": w,
            "encoder.fc.base.bias": bias,
            "encoder.fc.lora_A": a,
            "encoder.fc.lora_B": b,
            "task.head.weight": torch.randn(2, 5),
        }
    }

    def meta(strategy: dict) -> CheckpointMeta:
        return CheckpointMeta(
            "finetune", "finetune", ModelSpec("vit_tiny_patch16_224"), task={"strategy": strategy}
        )

    merged = plain_backbone_state(checkpoint, meta({"name": "lora", "rank": 2, "alpha": 4.0}), "ft.ckpt")
    assert set(merged) == {"fc.weight", "fc.bias"}
    torch.testing.assert_close(merged["fc.weight"], w + 2.0 * b @ a)
    for name in ("adapter", "prompt"):
        with pytest.raises(CheckpointError, match=f"'ft.ckpt' is a fine-tune with the {name} strategy"):
            plain_backbone_state(checkpoint, meta({"name": name}), "ft.ckpt")
    kept = plain_backbone_state(checkpoint, meta({"name": "full"}), "ft.ckpt")
    assert set(kept) == {"fc.base.weight", "fc.base.bias", "fc.lora_A", "fc.lora_B"}


HF_LOADER = textwrap.dedent("""
    import sys
    import timm
    import torch
    from transformers import AutoModel

    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for export_dir in sys.argv[1:]:
        hf = AutoModel.from_pretrained(export_dir).eval()
        plain = timm.create_model(f"local-dir:{export_dir}", pretrained=True).eval()
        with torch.no_grad():
            difference = (hf(pixel_values=x).pooler_output - plain(x)).abs().max().item()
        print(export_dir, type(hf).__name__, difference)
    assert not any(name == "selfsup" or name.startswith("selfsup.") for name in sys.modules)
""")


def test_exports_load_in_hugging_face_transformers_with_the_pooled_features_of_timm(tmp_path):
    """SimCLR's export (class token) and MAE's (mean-pooled), in one process without selfsup (one
    import of transformers for both)."""
    outs = [str(export(FIXTURES / f"format1_{m}.ckpt", tmp_path / f"export_{m}")) for m in ("simclr", "mae")]
    script = tmp_path / "hf.py"
    script.write_text(HF_LOADER)
    result = subprocess.run(
        [sys.executable, str(script), *outs], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith(tuple(outs))]
    assert [line[0] for line in lines] == outs
    for _, name, difference in lines:
        assert name == "TimmWrapperModel" and float(difference) <= 1e-6
