import pytest
import torch

from selfsup.encoders import create_encoder, encode_visible, num_kept, patchify, random_masking, unpatchify


def naive_patchify(images, p):
    b, c, h, w = images.shape
    out = torch.empty(b, (h // p) * (w // p), p * p * c)
    for n in range(b):
        for i in range(h // p):
            for j in range(w // p):
                values = [
                    images[n, ch, i * p + r, j * p + q] for r in range(p) for q in range(p) for ch in range(c)
                ]
                out[n, i * (w // p) + j] = torch.stack(values)
    return out


@pytest.mark.parametrize(("channels", "h", "w", "p"), [(1, 8, 8, 2), (3, 8, 12, 4), (3, 32, 32, 8)])
def test_patchify_matches_naive_order_and_round_trips(channels, h, w, p):
    images = torch.randn(2, channels, h, w)
    patches = patchify(images, p)
    assert patches.shape == (2, (h // p) * (w // p), p * p * channels)
    torch.testing.assert_close(patches, naive_patchify(images, p))
    assert torch.equal(unpatchify(patches, p, channels, h, w), images)
    if h == w:
        assert torch.equal(unpatchify(patches, p, channels), images)


def test_patchify_rejects_sizes_the_patch_does_not_divide():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(1, 3, 10, 10), 4)
    with pytest.raises(ValueError):
        unpatchify(torch.zeros(1, 5, 48), 4, 3)


@pytest.mark.parametrize(
    ("length", "ratio"), [(64, 0.75), (49, 0.75), (196, 0.9), (16, 0.5), (10, 0.0), (7, 0.99)]
)
def test_kept_count_mask_convention_and_restore(length, ratio):
    tokens = torch.randn(5, length, 3)
    out = random_masking(tokens, ratio)
    keep = max(1, round(length * (1 - ratio)))
    assert num_kept(length, ratio) == keep
    assert out.kept.shape == (5, keep, 3) and out.mask.shape == (5, length)
    assert torch.equal(out.mask.sum(1), torch.full((5,), float(length - keep)))  # 1 = masked
    for n in range(5):
        visible = (out.mask[n] == 0).nonzero().squeeze(1)
        assert torch.equal(visible.sort().values, out.ids_keep[n].sort().values)
        assert torch.equal(out.kept[n], tokens[n, out.ids_keep[n]])
    # ids_restore is a permutation whose inverse is the shuffle: its first K entries are the kept ids
    # (in the kept tokens' order), and [kept, removed] gathered with ids_restore is the original sequence
    assert torch.equal(out.ids_restore.sort(1).values, torch.arange(length).expand(5, -1))
    ids_shuffle = out.ids_restore.argsort(1)
    assert torch.equal(ids_shuffle[:, :keep], out.ids_keep)
    removed = tokens.gather(1, ids_shuffle[:, keep:].unsqueeze(-1).expand(-1, -1, 3))
    restored = torch.cat([out.kept, removed], dim=1).gather(
        1, out.ids_restore.unsqueeze(-1).expand(-1, -1, 3)
    )
    assert torch.equal(restored, tokens)
    assert torch.equal((out.mask == 1), (out.ids_restore >= keep))  # the removed part is what is masked


def test_samples_get_different_masks_and_a_generator_makes_them_reproducible():
    tokens = torch.randn(8, 64, 2)
    out = random_masking(tokens, 0.75)
    assert len({tuple(m.tolist()) for m in out.mask}) == 8
    a = random_masking(tokens, 0.75, torch.Generator().manual_seed(3))
    b = random_masking(tokens, 0.75, torch.Generator().manual_seed(3))
    c = random_masking(tokens, 0.75, torch.Generator().manual_seed(4))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.kept, b.kept)
    assert not torch.equal(a.mask, c.mask)
    torch.manual_seed(11)
    d = random_masking(tokens, 0.75)
    torch.manual_seed(11)
    assert torch.equal(d.mask, random_masking(tokens, 0.75).mask)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_invalid_mask_ratio(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(torch.randn(1, 4, 2), ratio)


def test_encoder_blocks_see_exactly_the_visible_tokens_plus_class_token():
    encoder = create_encoder("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=3)
    seen = []
    hooks = [
        block.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
        for block in encoder.blocks
    ]
    tokens, masked = encode_visible(encoder, torch.randn(2, 3, 32, 32), 0.75)
    for hook in hooks:
        hook.remove()
    assert seen == [(2, 1 + 16, 192)] * 3  # 64 patches, 16 visible, + class token, in every block
    assert tokens.shape == (2, 17, 192) and masked.mask.sum().item() == 2 * 48


def test_visible_encoding_with_nothing_masked_equals_the_full_forward():
    encoder = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2).eval()
    x = torch.randn(2, 3, 16, 16)
    tokens, masked = encode_visible(encoder, x, 0.0)
    full = encoder.forward_features(x)
    reordered = full[:, 1:].gather(1, masked.ids_keep.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(tokens[:, 0], full[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens[:, 1:], reordered, atol=1e-5, rtol=1e-5)
