"""Continual pretraining end to end: ``init_from`` + ``continual_weight`` trains with every method,
including those whose ``training_step`` calls ``guard(loss)`` without passing its views (SimCLR,
MAE): the continual term then uses the first view of the step's augmented batch."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import pytest
import torch

from selfsup import MAE, ImageDataModule, SimCLR
from selfsup.export import write_export

TINY = {"img_size": 16, "patch_size": 4, "encoder_kwargs": {"depth": 1}}


@pytest.mark.parametrize("cls", [SimCLR, MAE], ids=lambda c: c.__name__)
def test_continual_weight_trains_with_methods_that_do_not_pass_their_views(tmp_path, cls):
    L.seed_everything(0)
    source = cls("vit_tiny_patch16_224", **TINY)
    start = write_export(
        tmp_path / "start", source.encoder, "t", source.mean, source.std, {"method": cls.method}
    )
    model = cls("vit_tiny_patch16_224", **TINY, init_from=str(start), continual_weight=1.0)
    frozen = {k: v.clone() for k, v in model.start_encoder.state_dict().items()}
    predictor = [p.detach().clone() for p in model.continual_predictor.parameters()]
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, ImageDataModule(image_size=16, batch_size=16, num_workers=0, train_subset=32))
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.logged_metrics["train/continual_distill_step"])
    for name, value in model.start_encoder.state_dict().items():
        assert torch.equal(value, frozen[name]), name  # the frozen start never moves
    # the predictor trained (the first step has lr 0 in warm-up; the second moves it)
    assert any(
        not torch.equal(p, q) for p, q in zip(model.continual_predictor.parameters(), predictor, strict=True)
    )
    assert model._step_views is None  # consumed by guard(): no batch held after the step


def test_the_continual_term_lives_in_its_own_mixin_and_no_method_knows_it():
    """The term is :class:`ContinualDistillation`'s: ``PretrainModule`` defines no ``guard()`` of its
    own (``SelfSupModule.guard`` registers the loss), and neither it nor any method file of
    ``selfsup/methods`` holds continual-learning code."""
    import selfsup.methods.base as base
    from selfsup.methods import registry
    from selfsup.methods.continual import ContinualDistillation

    assert "guard" not in vars(base.PretrainModule)
    assert base.PretrainModule.guard is ContinualDistillation.guard
    folder = Path(base.__file__).parent
    files = [Path(e.source) for e in registry().values() if Path(e.source).parent == folder]
    assert len(files) >= 5  # simclr, mae, dino, mocov3, distill...
    for path in [*files, Path(base.__file__)]:
        source = path.read_text(encoding="utf-8")
        for word in ("start_encoder", "continual_predictor", "_step_views", "continual_term"):
            assert word not in source, f"{path.name} mentions {word}"
        # and a method hands guard() its loss alone: no views for the term
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "guard":
                assert len(node.args) == 1 and not node.keywords, f"{path.name}: {ast.unparse(node)}"


def test_init_from_takes_every_source_of_load_encoder(tmp_path):
    """``init_from`` starts the encoder from a timm name plus an offline weights file (exactly the
    file's weights, as timm reads it), a ``local-dir:`` folder, or an export; a wrong architecture is
    a one-line error naming both, and a missing file names the file."""
    from safetensors.torch import save_file

    from selfsup.contract import CheckpointError

    torch.manual_seed(0)
    source = SimCLR("vit_tiny_patch16_224", **TINY).encoder
    weights = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(weights, tmp_path / "weights.safetensors")
    folder = write_export(tmp_path / "start", source, "t", (0.5,) * 3, (0.5,) * 3, {"method": "simclr"})
    for init in (
        {"init_from": "vit_tiny_patch16_224", "init_from_file": str(tmp_path / "weights.safetensors")},
        {"init_from": f"local-dir:{folder}"},
        {"init_from": str(folder)},
    ):
        torch.manual_seed(1)  # another random initialisation, overwritten by the start weights
        model = SimCLR("vit_tiny_patch16_224", **TINY, **init)
        for name, value in model.encoder.state_dict().items():
            assert torch.equal(value, weights[name]), (init, name)
    with pytest.raises(
        CheckpointError, match=r"holds a vit_tiny_patch16_224 \(16 px.*but this run builds"
    ) as error:
        SimCLR(
            "vit_tiny_patch16_224",
            img_size=16,
            patch_size=4,
            encoder_kwargs={"depth": 2},
            init_from=str(folder),
        )
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors' does not exist"):
        SimCLR(
            "vit_tiny_patch16_224",
            **TINY,
            init_from="vit_tiny_patch16_224",
            init_from_file="nowhere.safetensors",
        )
    with pytest.raises(ValueError, match="set init_from too"):
        SimCLR("vit_tiny_patch16_224", **TINY, init_from_file=str(tmp_path / "weights.safetensors"))


def test_init_from_reads_an_original_dinov2_file_through_timms_conversion(tmp_path):
    """The public DINOv2 weights are facebookresearch ``.pth`` files: ``register_tokens``, a
    ``mask_token``, and a position embedding with a class-token slot that timm folds into its class
    token. ``init_from`` + ``init_from_file`` reads such a file (here a 1-block one written in that
    layout) through timm's own conversion; no key is renamed by selfsup."""
    from selfsup import DINO
    from selfsup.encoders import create_encoder

    torch.manual_seed(0)
    timm_layout = create_encoder("vit_small_patch14_reg4_dinov2", img_size=28, depth=1).state_dict()
    class_slot = torch.randn(1, 1, 384)
    original = {k.replace("reg_token", "register_tokens"): v for k, v in timm_layout.items()}
    original["pos_embed"] = torch.cat([class_slot, timm_layout["pos_embed"]], dim=1)
    original["cls_token"] = timm_layout["cls_token"] - class_slot
    original["mask_token"] = torch.zeros(1, 384)
    torch.save(original, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    model = DINO(
        "vit_small_patch14_reg4_dinov2", img_size=28, encoder_kwargs={"depth": 1}, out_dim=64, hidden_dim=32,
        bottleneck_dim=16, init_from="vit_small_patch14_reg4_dinov2",
        init_from_file=str(tmp_path / "dinov2_vits14_reg4_pretrain.pth"),
    )  # fmt: skip
    loaded = model.encoder.state_dict()
    assert model.encoder.num_reg_tokens == 4 and set(loaded) == set(timm_layout)
    for name, value in timm_layout.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=1e-6 if name == "cls_token" else 0)
