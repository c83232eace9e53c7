"""I-JEPA's predictor: shapes, the reference's position table and initialisation, and that each
prediction reads only the given context tokens and positions."""

import numpy as np
import pytest
import torch

from selfsup.heads import JEPAPredictor


def reference_sincos(dim: int, side: int) -> np.ndarray:
    """facebookresearch/ijepa ``get_2d_sincos_pos_embed`` restated: a meshgrid with the column
    coordinate first, each half ``[sin, cos]`` of ``pos * 10000 ** (-k / (dim / 4))``."""
    cols, rows = np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float))

    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=float) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one(dim // 2, cols), one(dim // 2, rows)], axis=1)


def small(**kwargs) -> JEPAPredictor:
    torch.manual_seed(0)
    return JEPAPredictor(**{**dict(grid_size=(6, 6), encoder_dim=24, dim=16, depth=2, num_heads=2), **kwargs})


def test_shapes_position_table_and_initialisation():
    predictor = small()
    b, kc, m, kt = 3, 10, 4, 5
    context_ids = torch.stack([torch.randperm(36)[:kc].sort().values for _ in range(b)])
    target_ids = torch.randint(0, 36, (b, m, kt))
    out = predictor(torch.randn(b, kc, 24), context_ids, target_ids)
    assert out.shape == (b, m, kt, 24) and torch.isfinite(out).all()
    torch.testing.assert_close(predictor.pos_embed, torch.from_numpy(reference_sincos(16, 6)).float())
    assert "pos_embed" not in dict(predictor.named_parameters())  # fixed, as the reference's
    linears = [m for m in predictor.modules() if isinstance(m, torch.nn.Linear)]
    # the reference's trunc_normal_(std=0.02) (cut at +-2 absolute, so in effect a normal), zero biases
    assert all(abs(float(m.weight.detach().std()) - 0.02) < 0.004 for m in linears)
    assert all(m.bias is not None and not m.bias.any() for m in linears)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in predictor.parameters())


def test_reads_only_the_given_tokens_and_positions():
    """Changing the position table outside the given context and target positions, or nothing at all,
    leaves the output unchanged; changing one context token or one given position changes it. Each
    target block is predicted in its own sequence, so changing one block's positions leaves the
    other blocks' predictions unchanged."""
    predictor = small(init_std=0.3).eval()  # larger weights than the init: clear differences
    context_ids = torch.tensor([[0, 1, 2, 7, 8], [3, 4, 5, 10, 11]])
    target_ids = torch.tensor([[[20, 21], [26, 27]], [[30, 31], [32, 33]]])
    context = torch.randn(2, 5, 24)
    with torch.no_grad():
        base = predictor(context, context_ids, target_ids)
        used = set(context_ids.flatten().tolist()) | set(target_ids.flatten().tolist())
        unused = torch.tensor([i for i in range(36) if i not in used])
        predictor.pos_embed[unused] = torch.randn(len(unused), 16) * 5
        torch.testing.assert_close(predictor(context, context_ids, target_ids), base, rtol=0, atol=1e-5)
        # one context token of image 0 changes image 0's predictions only
        changed = context.clone()
        changed[0, 2] += 1.0
        out = predictor(changed, context_ids, target_ids)
        assert (out[0] - base[0]).abs().max() > 1e-3
        torch.testing.assert_close(out[1], base[1], rtol=0, atol=1e-5)
        # block 1 of image 0 moves: block 0 is unchanged, block 1 changes
        moved = target_ids.clone()
        moved[0, 1] = torch.tensor([14, 15])
        out = predictor(context, context_ids, moved)
        torch.testing.assert_close(out[0, 0], base[0, 0], rtol=0, atol=1e-5)
        assert (out[0, 1] - base[0, 1]).abs().max() > 1e-3
        # swapping two targets' positions within a block swaps their predictions
        swapped = target_ids.flip(-1)
        torch.testing.assert_close(predictor(context, context_ids, swapped), base.flip(2), rtol=0, atol=1e-5)


def test_mismatched_inputs_are_rejected():
    predictor = small()
    with pytest.raises(ValueError, match="disagree"):
        predictor(
            torch.randn(2, 5, 24), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 1, 3, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="not divisible by its 5 heads"):
        JEPAPredictor((4, 4), 8, dim=16, num_heads=5)
