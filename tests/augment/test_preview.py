"""``selfsup preview``: a PNG of the originals with their crop boxes and the views, as training makes them."""

import torch
from PIL import Image

from selfsup.augment.preview import preview_grid
from selfsup.commands.preview import preview_command
from selfsup.methods.simclr import SimCLR
from tests.helpers import REPO


def test_the_view_rows_are_the_training_views_and_the_boxes_are_drawn():
    model = SimCLR("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 1})
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    grid = preview_grid(model, images, seed=5, min_side=16)
    side, pad = 16, 2
    assert grid.shape == (3, pad + 3 * (side + pad), pad + 3 * (side + pad))  # originals + 2 views, 3 columns
    views, _ = model.view_augment.forward_with_params(images, generator=torch.Generator().manual_seed(5))
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    for row, view in enumerate(views, start=1):
        for col in range(3):
            y, x = pad + row * (side + pad), pad + col * (side + pad)
            expected = (view[col] * std[0] + mean[0]).clamp(0, 1)
            torch.testing.assert_close(grid[:, y : y + side, x : x + side], expected, atol=1e-6, rtol=0)
    top = grid[:, pad : pad + side, pad : pad + side]
    assert not torch.allclose(top, images[0].float() / 255)  # the crop boxes are drawn on the originals


def test_command_writes_the_png_of_a_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = preview_command(
        ["-c", str(REPO / "configs/dino/digits.yaml"), "--out", "v/views.png", "--num_images", "4"]
    )
    width, height = Image.open(out).size
    assert out.resolve() == tmp_path / "v/views.png" and width == 2 + 4 * (
        96 + 2
    )  # 16-px digits shown at 96 px
    assert height == 2 + 7 * (96 + 2)  # 1 row of originals + 2 global + 4 local views
    assert "then 6 rows of views" in capsys.readouterr().out
