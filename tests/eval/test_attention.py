"""Attention maps: the class token's attention against a naive re-computation from the last block's
weights, DINO's mass threshold against its sort-and-unsort loop, PNG sizes, the command on a checkpoint
and on an export, and the callback after a 1-epoch SimCLR fit."""

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from PIL import Image

from selfsup import MAE, ImageDataModule, SimCLR
from selfsup.commands.attention import attention_command
from selfsup.encoders import create_encoder
from selfsup.eval.attention import (
    AttentionMaps,
    attention_figure,
    class_token_attention,
    mass_threshold,
    save_attention_maps,
)

HEADS = 3  # vit_tiny


def encoder(**kwargs):
    torch.manual_seed(0)
    model = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, **kwargs)
    with torch.no_grad():  # non-trivial q/k norms
        for p in model.blocks[-1].attn.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@torch.no_grad()
def naive_attention(model, images):
    """The last block's input by a pre-hook, then LayerNorm, q and k per head, softmax: by hand."""
    captured = {}
    handle = model.blocks[-1].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        model.forward_features(images)
    handle.remove()
    block = model.blocks[-1]
    attn = block.attn
    x = F.layer_norm(captured["x"], (model.embed_dim,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    d, dim = attn.head_dim, model.embed_dim
    w, b = attn.qkv.weight, attn.qkv.bias
    prefix = model.num_prefix_tokens
    out = torch.zeros(len(images), attn.num_heads, x.shape[1] - prefix)
    for i in range(len(images)):
        for h in range(attn.num_heads):
            rows_q, rows_k = slice(h * d, (h + 1) * d), slice(dim + h * d, dim + (h + 1) * d)
            q = x[i, 0] @ w[rows_q].T + b[rows_q]
            q = F.layer_norm(q, (d,), attn.q_norm.weight, attn.q_norm.bias, attn.q_norm.eps)
            logits = []
            for j in range(x.shape[1]):
                k = x[i, j] @ w[rows_k].T + b[rows_k]
                k = F.layer_norm(k, (d,), attn.k_norm.weight, attn.k_norm.bias, attn.k_norm.eps)
                logits.append(float(q @ k) / math.sqrt(d))
            weights = torch.tensor(logits).softmax(dim=0)
            out[i, h] = weights[prefix:]
    return out


def timm_unfused_attention(model, images):
    """timm's own non-fused path: the attention matrix is the input of the last block's attn_drop."""
    attn = model.blocks[-1].attn
    captured = {}
    attn.fused_attn = False
    handle = attn.attn_drop.register_forward_hook(lambda m, args, out: captured.setdefault("a", args[0]))
    try:
        with torch.no_grad():
            model.forward_features(images)
    finally:
        handle.remove()
        attn.fused_attn = True
    return captured["a"][:, :, 0, model.num_prefix_tokens :]


def test_attention_matches_a_naive_recomputation_with_registers_and_a_non_square_grid():
    model = encoder(reg_tokens=2, dynamic_img_size=True, qk_norm=True).train()
    images = torch.randn(2, 3, 16, 24)
    attention = class_token_attention(model, images)
    assert attention.shape == (2, HEADS, 4, 6) and model.training  # the mode is put back
    expected = naive_attention(model.eval(), images)
    torch.testing.assert_close(attention.flatten(-2), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        attention.flatten(-2), timm_unfused_attention(model, images), atol=1e-6, rtol=1e-5
    )
    # the class token and the registers take the rest of each row's mass
    assert (attention.sum(dim=(-2, -1)) < 1).all()


def test_attention_of_an_mae_encoder():
    module = MAE("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 1})
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    attention = class_token_attention(module.backbone, module.normalize(images))
    assert attention.shape == (2, HEADS, 4, 4) and torch.isfinite(attention).all()


def test_attention_rejects_models_and_images_it_cannot_show():
    with pytest.raises(ValueError, match="no class token"):
        class_token_attention(encoder(class_token=False, global_pool="avg"), torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="dynamic_img_size"):
        class_token_attention(encoder(), torch.randn(1, 3, 16, 24))


def test_mass_threshold_equals_dinos_sort_and_unsort():
    torch.manual_seed(0)
    attention = torch.rand(2, HEADS, 4, 5) ** 4
    mask = mass_threshold(attention, 0.6)
    for i in range(2):  # visualize_attention.py, head by head
        values, order = attention[i].flatten(-2).sort()
        values = values / values.sum(dim=1, keepdim=True)
        keep = values.cumsum(dim=1) > 1 - 0.6
        unsort = order.argsort()
        for h in range(HEADS):
            assert torch.equal(mask[i, h].flatten(), keep[h][unsort[h]])
    kept = (attention * mask).sum(dim=(-2, -1)) / attention.sum(dim=(-2, -1))
    assert (kept >= 0.6 - 1e-6).all() and (kept < 1).all()


def test_figure_size_follows_the_panels():
    image = torch.randint(0, 256, (3, 16, 24), dtype=torch.uint8)
    attention = torch.rand(HEADS, 4, 6)
    assert attention_figure(image, attention, panel_size=48).shape == (32, 4 * 48, 4)
    assert attention_figure(image, attention, threshold=0.6, panel_size=29).shape == (19, 4 * 29, 4)
    assert attention_figure(image[:, :, :16], attention[:, :, :4]).shape == (128, 4 * 128, 4)  # 16 px x 8


def write_images(folder, count=2):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def png_sizes(paths):
    sizes = []
    for path in paths:
        with Image.open(path) as image:
            sizes.append(image.size)
    return sizes


def test_saved_pngs_have_one_panel_per_head(tmp_path):
    paths = write_images(tmp_path)
    model = encoder()
    out = save_attention_maps(model, paths, tmp_path / "maps", (0.5,) * 3, (0.25,) * 3, image_size=16)
    assert [p.name for p in out] == ["000_img0.png", "001_img1.png"]
    assert png_sizes(out) == [(4 * 128, 128)] * 2
    out = save_attention_maps(
        model, paths[:1], tmp_path / "th", (0.5,) * 3, (0.25,) * 3, 16, threshold=0.6, panel_size=40
    )
    assert png_sizes(out) == [(4 * 40, 40)]


def test_the_command_says_what_it_wrote_and_names_every_unreadable_image(tmp_path, capsys):
    """`attention` printed nothing when it succeeded, and on a bad image suggested `data.skip_corrupt`,
    which it does not have."""
    from selfsup.cli import main
    from selfsup.export import write_export

    model = write_export(tmp_path / "export", encoder(), "t", (0.5,) * 3, (0.25,) * 3, {"method": "t"})
    images = write_images(tmp_path, count=3)
    main(["attention", str(model), *map(str, images), "--out", str(tmp_path / "maps"), "--device", "cpu"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        f"wrote 3 PNGs to {tmp_path / 'maps'} (000_img0.png, 001_img1.png, 002_img2.png): each image at 16 px "
        f"and the class-token attention of each of the {HEADS} heads of the last block"
    ]
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        "000_img0.png",
        "001_img1.png",
        "002_img2.png",
    ]

    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    argv = ["attention", str(model), str(images[0]), str(tmp_path / "bad.png"), str(tmp_path / "empty.jpg")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "bad_maps"), "--device", "cpu"])
    assert exit_info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"selfsup: error: Cannot read image '{tmp_path / 'bad.png'}'")
    assert last.endswith(
        "Leave it out of the images given, or replace the file with one that opens. "
        f"1 more cannot be read either: {tmp_path / 'empty.jpg'}."
    )
    assert "skip_corrupt" not in last and not (tmp_path / "bad_maps").exists()


class RecordingLogger(Logger):
    """A logger whose experiment records ``add_image`` calls (TensorBoard's API)."""

    def __init__(self, root):
        super().__init__()
        self.root, self.images = str(root), []

    name, version = "recording", 0

    @property
    def save_dir(self):
        return self.root

    @property
    def experiment(self):
        return self

    def add_image(self, tag, image, global_step, dataformats):
        self.images.append((tag, image.shape, global_step, dataformats))

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        pass


def test_callback_after_a_one_epoch_fit_and_the_command_on_its_checkpoint_and_export(tmp_path):
    L.seed_everything(0)
    module = SimCLR("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 1})
    data = ImageDataModule(image_size=16, batch_size=32, num_workers=0, train_subset=64, val_subset=32)
    logger = RecordingLogger(tmp_path / "run")
    callback = AttentionMaps(every_n_epochs=5, num_images=2)  # the last epoch always writes
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=logger,
        callbacks=[callback, ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last")],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, data)
    folder = tmp_path / "run" / "attention" / "epoch_000"
    assert callback.paths == [folder / "0.png", folder / "1.png"]
    assert png_sizes(callback.paths) == [(4 * 128, 128)] * 2
    assert [(tag, shape) for tag, shape, _, _ in logger.images] == [
        ("attention/0", (128, 512, 3)),
        ("attention/1", (128, 512, 3)),
    ]

    images = write_images(tmp_path)
    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    out = attention_command([str(checkpoint), *map(str, images), "--out", str(tmp_path / "from_ckpt")])
    assert png_sizes(out) == [(4 * 128, 128)] * 2

    from selfsup.export import export

    exported = export(checkpoint, tmp_path / "export")
    out = attention_command(
        [
            str(exported),
            str(images[0]),
            "--out",
            str(tmp_path / "from_export"),
            "--image_size",
            "24",
            "--threshold",
            "0.6",
        ]
    )
    assert png_sizes(out) == [(4 * 144, 144)]  # 24 px panels enlarged 6 times
