"""DINOv2 as a method: the mask token in the student only, the loss composition against lightly's
DINO, iBOT and KoLeo losses, the Sinkhorn teacher, the momentum teacher, the frozen last layers, the
CLI with an export that plain timm loads (register tokens), attention maps and ``probe
--last_blocks 4``, and learning on the digits. The losses, the masks and Sinkhorn-Knopp have their
own tests (tests/losses/test_ibot.py, test_koleo.py, test_sinkhorn.py,
tests/encoders/test_block_masking.py)."""

import json
import math

import lightning as L
import pytest
import torch
from lightly.loss import DINOLoss as LightlyDINOLoss
from lightly.loss import IBOTPatchLoss as LightlyIBOTPatchLoss
from lightly.loss import KoLeoLoss as LightlyKoLeoLoss
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

import selfsup
from selfsup import ImageDataModule
from selfsup.eval.callbacks import encoder_knn_top1
from selfsup.losses import GramLoss
from selfsup.methods import registry
from selfsup.methods.dinov2 import DINOv2
from selfsup.optim import OptimConfig
from tests.helpers import REPO, count_host_reads, run_in_plain_timm

TINY = {"img_size": 16, "patch_size": 4, "encoder_kwargs": {"depth": 1, "reg_tokens": 2}}
HEAD = {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16}
PLAIN = {"local_crops": 2, "local_size": 8, "hflip_prob": 0.0, "jitter_prob": 0.0, "grayscale_prob": 0.0,
         "blur_probs": (0.0, 0.0, 0.0), "solarize_prob": 0.0}  # fmt: skip


def tiny(trainer: bool = False, **kwargs) -> DINOv2:
    torch.manual_seed(0)
    model = DINOv2("vit_tiny_patch16_224", **TINY, **{**HEAD, "augment": PLAIN, **kwargs})
    if not trainer:
        model.log = lambda *args, **kwargs: None  # training_step called directly: no trainer logs
    return model


def fixed_batch(model: DINOv2, batch: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 3, v.size, v.size, generator=g) for v in model.views]


def fixed_masks(batch: int = 4) -> torch.Tensor:
    masks = torch.zeros(2 * batch, 16, dtype=torch.bool)
    masks[0, [0, 1, 4, 5]] = True
    masks[3, [10, 11]] = True
    masks[5, [6, 7, 8, 9, 13]] = True
    return masks


def with_masks(model: DINOv2, masks: torch.Tensor) -> None:
    index = masks.flatten().nonzero().squeeze(1)
    weights = 1.0 / masks.sum(-1).clamp(min=1).float()[:, None].expand_as(masks)[masks]
    model.draw_masks = lambda n, device: (masks, index, weights)


def test_declarations():
    model = DINOv2("vit_tiny_patch16_224", **TINY, **HEAD, separate_head=True, ibot_out_dim=24)
    assert selfsup.DINOv2 is DINOv2 and registry()["dinov2"].class_name == "DINOv2"
    assert [v.size for v in model.views] == [16, 16] + [8] * 8  # 2 global + 8 local crops
    assert model.views[0].crop_scale == (0.32, 1.0) and model.views[2].crop_scale == (0.05, 0.32)
    assert (
        model.backbone is model.teacher_encoder
        and model.checkpoint_meta().backbone_prefix == "teacher_encoder."
    )
    assert model.teacher_encoder.num_prefix_tokens == 3  # class + 2 registers
    assert model.criterion.out_dim == model.hparams["out_dim"] == 32 and model.ibot_criterion.out_dim == 24
    teacher = [
        *model.teacher_encoder.parameters(),
        *model.teacher_head.parameters(),
        *model.teacher_ibot_head.parameters(),
    ]
    assert teacher and all(not p.requires_grad for p in teacher)
    assert not model.head.norm_last_layer  # dinov2's head: the last layer's norm trains
    shared = DINOv2("vit_tiny_patch16_224", **TINY, **HEAD)
    assert shared.ibot_head is None and shared.ibot_criterion.out_dim == 32
    assert shared.optim.layer_decay == 0.9 and shared.optim.patch_embed_lr_mult == 0.2
    with pytest.raises(ValueError, match="centering"):
        DINOv2("vit_tiny_patch16_224", **TINY, **HEAD, centering="center")


def _block_input(encoder, run):
    seen = []
    handle = encoder.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_the_mask_token_replaces_exactly_the_masked_patches_in_the_student_only():
    model = tiny()
    model.mask_token.data.normal_()  # zeros at initialisation, as the reference
    views = fixed_batch(model)
    masks = fixed_masks()
    with_masks(model, masks)
    globals_ = torch.cat(views[:2])
    prefix = model.encoder.num_prefix_tokens
    plain_student = _block_input(model.encoder, lambda: model.encoder.forward_features(globals_))[0]
    plain_teacher = _block_input(
        model.teacher_encoder, lambda: model.teacher_encoder.forward_features(globals_)
    )[0]
    student = _block_input(model.encoder, lambda: model.training_step((views, None), 0))
    teacher = _block_input(model.teacher_encoder, lambda: model.training_step((views, None), 0))
    masked_student = student[0]  # the global crops' pass (the local crops' comes second)
    changed = (masked_student - plain_student).abs().sum(-1) > 0
    assert not changed[:, :prefix].any() and torch.equal(changed[:, prefix:], masks)
    torch.testing.assert_close(teacher[0], plain_teacher)  # the teacher sees the full crops
    # a masked patch is the mask token plus its position's embedding, whatever the image
    pos = model.encoder.pos_embed[0, prefix:]
    expected = (model.mask_token + pos[[0, 1]]).detach()
    torch.testing.assert_close(masked_student[0, prefix + torch.tensor([0, 1])], expected)
    assert student[1].shape[0] == 2 * 4  # the local crops pass unmasked through the student


def _reference_loss(model: DINOv2, views, masks, centering: str) -> torch.Tensor:
    """DINOv2's loss from lightly's pieces (softmax centring) or a written-out Sinkhorn teacher."""
    prefix = model.encoder.num_prefix_tokens
    globals_ = torch.cat(views[:2])
    with torch.no_grad():
        tokens = model.teacher_encoder.forward_features(globals_)
        t_cls = model.teacher_head(tokens[:, 0])
        t_patch = model.teacher_head(tokens[:, prefix:][masks])
    tokens = model.masked_forward(globals_, masks)
    s_cls = tokens[:, 0]
    local = model.encoder.forward_features(torch.cat(views[2:]))[:, 0]
    s_out = model.head(torch.cat([s_cls, local]))
    s_patch = model.head(tokens[:, prefix:][masks])
    koleo = sum(LightlyKoLeoLoss()(c) for c in s_cls.chunk(2))
    if centering == "softmax":
        dino = LightlyDINOLoss(output_dim=32, student_temp=0.1)(
            list(t_cls.chunk(2)), list(s_out.chunk(4)), teacher_temp=0.04
        )
        ibot = LightlyIBOTPatchLoss(output_dim=32, teacher_temp=0.04, student_temp=0.1)(
            t_patch, s_patch, masks.view(-1, 4, 4)
        )
    else:
        q = lightly_sinkhorn(t_cls, iterations=3, epsilon=0.04).chunk(2)
        log_p = torch.log_softmax(s_out / 0.1, dim=-1).chunk(4)
        dino = sum(-(q[i] * log_p[v]).sum(-1).mean() for i in range(2) for v in range(4) if v != i) / 6
        q_patch = lightly_sinkhorn(t_patch, iterations=3, epsilon=0.04)
        per_patch = -(q_patch * torch.log_softmax(s_patch / 0.1, dim=-1)).sum(-1)
        weights = (1 / masks.sum(-1).clamp(min=1))[:, None].expand_as(masks)[masks]
        ibot = (per_patch * weights).sum() / len(masks)
    return dino + ibot + 0.1 * koleo


@pytest.mark.parametrize("centering", ["softmax", "sinkhorn"])
def test_loss_is_dino_plus_ibot_plus_koleo_as_lightly_computes_them_in_value_and_gradient(centering):
    model = tiny(centering=centering)
    views, masks = fixed_batch(model), fixed_masks()
    with_masks(model, masks)
    loss = model.training_step((views, None), 0)["loss"]
    loss.backward()
    mine = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    reference = _reference_loss(tiny(centering=centering), views, masks, centering)
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-5, atol=1e-6)
    reference_model = tiny(centering=centering)
    _reference_loss(reference_model, views, masks, centering).backward()
    theirs = {n: p.grad for n, p in reference_model.named_parameters() if p.grad is not None}
    assert mine.keys() == theirs.keys() and "mask_token" in mine
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_step_and_the_clipping_read_nothing_back_from_the_device():
    """On a stand-in device (``meta``): the masks are drawn and indexed on the host and sent
    non-blocking; the forward, the losses (Sinkhorn and KoLeo included), the backward and the
    per-module clipping read no device value."""
    model = tiny(centering="sinkhorn", separate_head=True, ibot_out_dim=16).to("meta")
    views = [torch.empty(4, 3, v.size, v.size, device="meta") for v in model.views]
    with count_host_reads(devices=("meta",)) as calls:
        loss = model.training_step((views, None), 0)["loss"]
        loss.backward()
        model.clip_gradients_per_module()
    assert not calls, calls
    assert loss.device.type == "meta" and model.mask_token.grad is not None


def test_gram_anchoring_adds_its_weighted_term_on_the_global_crops_patches():
    views, masks = None, fixed_masks()
    losses = []
    for weight in (0.0, 0.5):
        model = tiny(gram_weight=weight)
        views = views or fixed_batch(model)
        with_masks(model, masks)
        losses.append(model.training_step((views, None), 0)["loss"].detach())
    globals_, prefix = torch.cat(views[:2]), model.encoder.num_prefix_tokens
    with torch.no_grad():
        gram = GramLoss()(
            model.masked_forward(globals_, masks)[:, prefix:],
            model.teacher_encoder.forward_features(globals_)[:, prefix:],
        )
    assert gram > 0
    torch.testing.assert_close(losses[1] - losses[0], 0.5 * gram, rtol=1e-4, atol=1e-7)


def test_snapshot_gram_teacher_is_an_earlier_ema_teacher_taken_and_refreshed_on_schedule(monkeypatch):
    """DINOv3's Gram teacher: a frozen copy of the EMA teacher taken at ``gram_start_step`` (2), then
    refreshed every ``gram_refresh_every`` (3) steps at most ``gram_max_refreshes`` (1) times: copies
    before steps 2 and 5 only. The term is off before step 2, and after it equals ``GramLoss`` of the
    student's patch tokens against the snapshot's (not the moving EMA teacher's)."""
    step = {"now": 0}
    monkeypatch.setattr(DINOv2, "global_step", property(lambda self: step["now"]))
    model = tiny(gram_weight=1.0, gram_teacher="snapshot", gram_start_step=2, gram_refresh_every=3,
                 gram_max_refreshes=1)  # fmt: skip
    assert [s for s in range(20) if model.gram_refresh_due(s)] == [2, 5]
    logged = []
    model.log_step = lambda loss, batch_size, **extra: logged.append(extra)
    views, masks = fixed_batch(model), fixed_masks()
    with_masks(model, masks)
    globals_, prefix = torch.cat(views[:2]), model.encoder.num_prefix_tokens
    taken = {}
    for now in range(8):
        step["now"] = now
        with torch.no_grad():  # the EMA teacher moves between steps, as training would move it
            for p in model.teacher_encoder.parameters():
                p.add_(0.01 * (now + 1))
        teacher = [p.clone() for p in model.teacher_encoder.parameters()]
        model.training_step((views, None), 0)
        if now < 2:
            assert "gram_loss" not in logged[-1]
            continue
        same = all(torch.equal(a, b) for a, b in zip(model.gram_encoder.parameters(), teacher, strict=True))
        assert same == (now in (2, 5)), now
        if same:
            taken[now] = teacher
        latest = taken[max(taken)]
        assert all(torch.equal(a, b) for a, b in zip(model.gram_encoder.parameters(), latest, strict=True))
        with torch.no_grad():
            expected = GramLoss()(model.masked_forward(globals_, masks)[:, prefix:],
                                  model.gram_encoder.forward_features(globals_)[:, prefix:])  # fmt: skip
        torch.testing.assert_close(logged[-1]["gram_loss"], expected)
    assert not any(p.requires_grad for p in model.gram_encoder.parameters())
    assert any(k.startswith("gram_encoder.") for k in model.state_dict())  # resumes with its snapshot


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"gram_teacher": "snapshot"}, "gram_weight > 0"),
        ({"gram_weight": 1.0, "gram_refresh_every": 10}, "gram_teacher: snapshot"),
        ({"gram_weight": 1.0, "gram_teacher": "old"}, "'ema' or 'snapshot'"),
        ({"gram_weight": 1.0, "gram_start_step": -1}, ">= 0"),
    ],
)
def test_gram_teacher_arguments_that_cannot_work_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        tiny(**arguments)


def test_teacher_gets_no_gradient_and_its_momentum_follows_the_cosine():
    model = tiny()
    model.total_steps = 10
    model.training_step((fixed_batch(model), None), 0)["loss"].backward()
    assert all(p.grad is None for p in model.teacher_encoder.parameters())
    assert all(p.grad is None for p in model.teacher_head.parameters())
    for step in (0, 3, 10):
        closed = 1 - (1 - 0.992) * (math.cos(math.pi * step / 10) + 1) / 2
        assert model.teacher_momentum(step) == pytest.approx(closed)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.teacher_encoder.parameters()]
    model.update_teachers(3)
    m = model.teacher_momentum(3)
    for old, new, student in zip(
        before, model.teacher_encoder.parameters(), model.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(new, m * old + (1 - m) * student)


def test_both_last_layers_are_frozen_in_the_first_epoch_only_and_each_module_is_clipped():
    model = tiny(trainer=True, separate_head=True, ibot_out_dim=16, clip_grad=1e-3)
    lasts = [model.head.last_layer.direction, model.ibot_head.last_layer.direction]
    seen, norms = {}, []

    class Watch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen[trainer.current_epoch] = [p.detach().clone() for p in lasts]

        def on_before_zero_grad(self, trainer, pl_module, optimizer):  # after a step: its grads as applied
            if all(p.grad is not None for p in lasts):  # epoch 1 (epoch 0 drops the last layers' grads)
                m = pl_module
                for params in (
                    [*m.encoder.parameters(), m.mask_token],
                    m.head.parameters(),
                    m.ibot_head.parameters(),
                ):
                    grads = [p.grad for p in params if p.grad is not None]
                    norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    start = [p.detach().clone() for p in lasts]
    L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[Watch()]).fit(
        model, ImageDataModule(image_size=16, batch_size=8, num_workers=0, train_subset=16))  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(seen[0], start, strict=True))  # epoch 0: frozen
    assert all(not torch.equal(a, b) for a, b in zip(seen[1], seen[0], strict=True))  # epoch 1: trained
    # each module clipped on its own to norm 1e-3 (one global norm would leave every module below it)
    assert len(norms) >= 3 and all(n == pytest.approx(1e-3, rel=1e-2) for n in norms), norms


def test_cli_fast_dev_run_export_with_registers_attention_and_probe_last_blocks(tmp_path, monkeypatch):
    """The digits config for one step, with a snapshot Gram teacher; the teacher's export (4 register
    tokens, layer scale; no Gram teacher) loads in a process without selfsup; its attention maps cover the patches only; ``selfsup probe
    --last_blocks 4`` scores the checkpoint."""
    from selfsup.cli import run
    from selfsup.eval.class_attention import class_token_attention
    from selfsup.export import export

    monkeypatch.chdir(tmp_path)
    cli = run(["fit", "-c", str(REPO / "configs/dinov2/digits.yaml"), "--trainer.fast_dev_run=true",
               "--trainer.callbacks=[]", "--data.init_args.batch_size=16",
               "--model.init_args.gram_weight=1.0", "--model.init_args.gram_teacher=snapshot"])  # fmt: skip
    model = cli.model
    assert isinstance(model, DINOv2) and cli.trainer.global_step == 1
    assert model.gram_encoder is not None  # kept in the checkpoint, left out of the export below
    assert model.teacher_encoder.num_prefix_tokens == 5 and len(model.teacher_encoder.blocks) == 4
    cli.trainer.save_checkpoint(tmp_path / "dinov2.ckpt")
    out = export(tmp_path / "dinov2.ckpt", tmp_path / "export")
    assert json.loads((out / "selfsup.json").read_text())["method"] == "dinov2"
    x = torch.randn(3, 3, 16, 16)
    features, _ = run_in_plain_timm(out, x, tmp_path)
    with torch.no_grad():
        teacher = model.teacher_encoder.eval()
        expected = teacher.forward_head(teacher.forward_features(x), pre_logits=True)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    attention = class_token_attention(teacher, x)
    assert attention.shape == (3, teacher.blocks[-1].attn.num_heads, 4, 4)  # registers left out
    results = run(["probe", str(tmp_path / "dinov2.ckpt"), "--last_blocks", "4", "--probe_epochs", "2",
                   "--k", "[5]", "--data.train_subset", "100", "--data.val_subset", "40",
                   "--out", str(tmp_path / "probe"), "--cache_dir", str(tmp_path / "cache")])  # fmt: skip
    assert len(results) == 1 and results[0].pool == "token@last4" and 0 <= results[0].knn_top1[5] <= 1


def digits_run(seed: int, epochs: int = 2) -> dict[str, float]:
    """kNN top-1 of the teacher after 1 step and after ``epochs`` epochs of one run on the digits
    (also run by hand for the measured figures:
    ``python -c "from tests.methods.test_dinov2 import digits_run; print(digits_run(1))"``)."""
    L.seed_everything(seed)
    model = DINOv2("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 2, "reg_tokens": 4},
                   out_dim=256, hidden_dim=256, bottleneck_dim=64, teacher_momentum=0.9,
                   warmup_teacher_temperature_epochs=2,
                   augment={**PLAIN, "global_scale": (0.4, 1.0), "local_scale": (0.1, 0.4)},
                   optim=OptimConfig(base_lr=2e-3, weight_decay=0.05, warmup_epochs=1))  # fmt: skip
    scores = {}

    class AfterOneStep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 1:
                scores["one_step"] = encoder_knn_top1(pl_module, trainer.datamodule, 20, 0.07, "token")

    data = ImageDataModule("digits", image_size=16, batch_size=64, num_workers=0)
    L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=[AfterOneStep()]).fit(model, data)  # fmt: skip
    scores["trained"] = encoder_knn_top1(model, data, 20, 0.07, "token")
    return scores


LIFT = 0.03


@pytest.mark.slow
def test_learns_on_the_digits():
    """Digits (1,437 / 360 at 16 px), 2-block ViT-Tiny with 4 registers, 2 global + 2 local crops,
    256 prototypes, teacher momentum 0.9, base lr 2e-3 without layer decay (at lr 1e-3 with layer
    decay 0.9: +5.8 / +2.2 points for seeds 0 / 2; the optimiser groups have their own test), 2 epochs of 64
    (46 steps). Measured (2026-12-02, 2 CPU cores shared with other jobs, one thread, seeds
    0 / 1 / 2): kNN top-1 of the teacher after 1 step 49.2 / 48.9 / 51.4 %, trained 61.7 / 55.6 /
    56.1 % (+12.5 / +6.7 / +4.7 points). Required: +3 points. Marked slow: 160-290 s on the shared
    machine (load 10-15), about half of DINO's 4-epoch digits test in compute."""
    scores = digits_run(0)
    assert scores["trained"] >= scores["one_step"] + LIFT, scores
