"""The base's mechanisms that methods declare rather than write: momentum teachers with a cosine
momentum schedule, and continual pretraining from an existing encoder."""

import math

import lightning as L
import pytest
import torch

from selfsup import MoCoV3, SimCLR
from selfsup.contract import CheckpointError
from selfsup.export import export
from selfsup.methods.base import ema_update

TINY = {"img_size": 16, "patch_size": 4, "encoder_kwargs": {"depth": 1}}


def mocov3(**kwargs):
    return MoCoV3("vit_tiny_patch16_224", projection_hidden_dim=16, prediction_hidden_dim=16, projection_dim=8,
                  **TINY, **kwargs)  # fmt: skip


def test_momentum_follows_the_cosine_over_all_optimiser_steps():
    model = mocov3(momentum=0.99)
    model.total_steps = 1000
    for step in (0, 1, 250, 500, 999, 1000, 2000):
        # MoCo v3's adjust_moco_momentum: 1 - (1 - m0) (cos(pi t / T) + 1) / 2
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * min(step, 1000) / 1000) + 1) / 2
        assert model.teacher_momentum(step) == pytest.approx(expected, abs=1e-12)


def test_ema_update_equals_its_formula_and_the_teacher_gets_no_gradient(monkeypatch):
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for t, b, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(t.detach(), 0.9 * b + 0.1 * s.detach())
    # a method's teachers: after the loss's backward, no gradient and none wanted; then the EMA step
    L.seed_everything(0)
    model = mocov3()
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    x = model.normalize(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8))
    model.training_step(((x, x.flip(-1)), torch.zeros(4, dtype=torch.long)), 0)["loss"].backward()
    students = [*model.encoder.parameters(), *model.projector.parameters()]
    teachers = [*model.momentum_encoder.parameters(), *model.momentum_projector.parameters()]
    assert len(teachers) == len(students) and any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in students
    )
    assert all(p.grad is None and not p.requires_grad for p in teachers)
    before = [p.detach().clone() for p in teachers]
    model.update_teachers(0)
    m = model.teacher_momentum(0)
    assert 0 < m < 1
    for t, b, s in zip(teachers, before, students, strict=True):
        torch.testing.assert_close(t, m * b + (1 - m) * s.detach())
        assert t.grad is None and not t.requires_grad


def test_teachers_move_by_ema_after_each_optimizer_step_only():
    L.seed_everything(0)
    model = mocov3()
    start = {k: v.clone() for k, v in model.momentum_encoder.state_dict().items()}
    snapshots = []

    class Watch(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            snapshots.append((
                {k: v.clone() for k, v in pl_module.encoder.state_dict().items()},
                {k: v.clone() for k, v in pl_module.momentum_encoder.state_dict().items()},
            ))  # fmt: skip

    from selfsup import ImageDataModule

    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Watch()])  # fmt: skip
    trainer.fit(model, ImageDataModule(image_size=16, batch_size=16, num_workers=0, train_subset=32))
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    # after step 0: teacher = m0 * teacher + (1 - m0) * student(after step 0)
    _, teacher_before_step_1 = snapshots[1]
    student_after_step_0, _ = snapshots[1]
    m0 = model.teacher_momentum(0)
    name = "blocks.0.attn.qkv.weight"
    torch.testing.assert_close(
        teacher_before_step_1[name], m0 * start[name] + (1 - m0) * student_after_step_0[name]
    )


def test_continual_pretraining_loads_the_encoder_only_and_refuses_another_architecture(tmp_path):
    L.seed_everything(0)
    source = SimCLR("vit_tiny_patch16_224", **TINY, projection_hidden_dim=16, projection_dim=8)
    from selfsup import ImageDataModule

    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(source, ImageDataModule(image_size=16, batch_size=16, num_workers=0, train_subset=32))
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    out = export(tmp_path / "a.ckpt", tmp_path / "export")
    for start in (tmp_path / "a.ckpt", out):
        model = mocov3(init_from=str(start))
        for name, value in source.encoder.state_dict().items():
            assert torch.equal(model.encoder.state_dict()[name], value), name
            assert torch.equal(model.momentum_encoder.state_dict()[name], value), name  # teacher = start
    fresh = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    fresh.fit(model, ImageDataModule(image_size=16, batch_size=16, num_workers=0, train_subset=32))
    optimizer = fresh.optimizers[0]
    steps = {int(s["step"]) for s in optimizer.state_dict()["state"].values()}
    assert steps == {1} and fresh.global_step == 1  # a fresh optimiser, counting from 0
    with pytest.raises(
        CheckpointError, match=r"init_from .*depth.*1.*this run builds .*depth.*2.*set model.init_args"
    ):
        SimCLR(
            "vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 2}, init_from=str(out)
        )
    with pytest.raises(ValueError, match="continual_weight"):
        SimCLR("vit_tiny_patch16_224", **TINY, continual_weight=1.0)


def test_continual_distillation_term_trains_the_predictor_and_never_the_frozen_start(tmp_path):
    """The frozen start encoder gets no gradient; the term trains the predictor and the encoder."""
    L.seed_everything(0)
    source = SimCLR("vit_tiny_patch16_224", **TINY, projection_hidden_dim=16, projection_dim=8)
    from selfsup.export import write_export

    out = write_export(
        tmp_path / "export", source.encoder, "t", source.mean, source.std, {"method": "simclr"}
    )
    model = SimCLR("vit_tiny_patch16_224", **TINY, projection_hidden_dim=16, projection_dim=8,
                   init_from=str(out), continual_weight=1.0)  # fmt: skip
    model.log = lambda *args, **kwargs: None
    view = model.normalize(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="no training batch reached this step"):
        model.guard(torch.zeros((), requires_grad=True))
    model.on_train_batch_start(([view, view], torch.zeros(8)), 0)  # what a Trainer calls before the step
    loss = model.guard(torch.zeros((), requires_grad=True))
    assert loss > 0  # the predictor starts random
    loss.backward()
    assert all(p.grad is None for p in model.start_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.continual_predictor.parameters())


def test_head_warmup_holds_the_backbone_bitwise_then_trains_it():
    """``head_warmup_steps``: the encoder stays bitwise as loaded for that many steps while the heads
    and the teacher's heads move; then it trains, its learning rate ramping over
    ``backbone_warmup_steps``; ``train/backbone_lr`` shows it."""
    from selfsup import DINO, ImageDataModule

    L.seed_everything(0)
    model = DINO("vit_tiny_patch16_224", **TINY, out_dim=64, hidden_dim=32, bottleneck_dim=16,
                 freeze_last_layer=0, head_warmup_steps=3, backbone_warmup_steps=2,
                 augment={"local_crops": 2, "local_size": 8}, optim={"warmup_epochs": 0})  # fmt: skip
    start = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    heads = {k: v.clone() for k, v in model.head.state_dict().items()}
    teacher_heads = {k: v.clone() for k, v in model.teacher_head.state_dict().items()}
    seen: list[tuple[int, bool, float]] = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            same = all(torch.equal(v, start[k]) for k, v in pl_module.encoder.state_dict().items())
            metrics = trainer.callback_metrics
            seen.append(
                (trainer.global_step, same, float(metrics["train/backbone_lr"] / metrics["train/lr"]))
            )

    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Watch()])  # fmt: skip
    trainer.fit(model, ImageDataModule(image_size=16, batch_size=16, num_workers=0, train_subset=96))
    assert [s for s, same, _ in seen if same] == [1, 2, 3], seen  # held for 3 steps, trained from the 4th
    # the backbone's rate over the heads': 0 while held, then a ramp of 2 steps (1/2, 1) within the schedule
    assert [ratio for _, _, ratio in seen] == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0, 1.0]), seen
    assert any(not torch.equal(v, heads[k]) for k, v in model.head.state_dict().items())
    assert any(not torch.equal(v, teacher_heads[k]) for k, v in model.teacher_head.state_dict().items())
