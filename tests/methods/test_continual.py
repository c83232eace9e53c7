"""Continual pretraining end to end: ``init_from`` + ``continual_weight`` trains with every method,
including those whose ``training_step`` calls ``guard(loss)`` without passing its views (SimCLR,
MAE): the continual term then uses the first view of the step's augmented batch."""

from __future__ import annotations

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
