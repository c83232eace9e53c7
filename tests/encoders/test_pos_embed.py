"""MAE's fixed 2-D sine-cosine position embedding against a naive loop over the reference's formula
(facebookresearch/mae ``util/pos_embed.py``)."""

import math

import pytest
import torch

from selfsup import MAE
from selfsup.encoders import sincos_2d


def naive_table(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """Position (i, j) → dim/4 sines and cosines of the column j, then of the row i, with
    frequencies 1 / 10000^(k / (dim / 4))."""
    quarter = dim // 4
    table = torch.zeros(grid_h * grid_w, dim, dtype=torch.float64)
    for i in range(grid_h):
        for j in range(grid_w):
            row = table[i * grid_w + j]
            for half, coordinate in enumerate((j, i)):
                for k in range(quarter):
                    angle = coordinate / 10000 ** (k / quarter)
                    row[half * 2 * quarter + k] = math.sin(angle)
                    row[half * 2 * quarter + quarter + k] = math.cos(angle)
    return table


@pytest.mark.parametrize(("grid_h", "grid_w", "dim"), [(4, 4, 16), (3, 5, 8)])
def test_table_equals_the_closed_form(grid_h, grid_w, dim):
    table = sincos_2d(grid_h, grid_w, dim, num_prefix=1)
    assert table.shape == (1 + grid_h * grid_w, dim)
    assert torch.equal(table[0], torch.zeros(dim))  # the class token's position: zeros
    torch.testing.assert_close(table[1:].double(), naive_table(grid_h, grid_w, dim), rtol=0, atol=1e-6)


def test_mae_encoder_position_embedding_is_fixed_and_never_trains():
    model = MAE("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 1})
    pos = model.encoder.pos_embed
    assert not pos.requires_grad
    torch.testing.assert_close(pos[0, 1:].double(), naive_table(4, 4, 192), rtol=0, atol=1e-6)
    assert torch.equal(pos[0, 0], torch.zeros(192))
    trained = {name for group in model.trainable_groups() for name, p in model.named_parameters()
               if any(p is q for q in group["params"])}  # fmt: skip
    assert "encoder.pos_embed" not in trained
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(2, 2, 6)
