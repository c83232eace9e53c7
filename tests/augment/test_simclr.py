import lightning as L
import pytest
import torch

from selfsup.augment import CropFlipAugment, CropFlipConfig, SimCLRAugment, SimCLRViewConfig, ViewConfig

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def batch(n=16, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def normalised(images):
    """``images`` (uint8, already at the output size) only normalised: what no augmentation gives."""
    return (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_shapes_dtype_and_value_range():
    aug = SimCLRAugment(32, MEAN, STD)
    L.seed_everything(0)
    x = batch(256)
    v1, v2 = aug(x)
    low = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    high = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    for v in (v1, v2):
        assert v.shape == (256, 3, 32, 32) and v.dtype == torch.float32 and v.device.type == "cpu"
        per_channel = v.transpose(0, 1).reshape(3, -1)
        assert (per_channel.min(1).values >= low - 1e-4).all() and (
            per_channel.max(1).values <= high + 1e-4
        ).all()
        # every sample of every view is changed (a crop of random area and aspect at least)...
        assert ((v - normalised(x)).abs().flatten(1).mean(1) > 0.05).all()
        # ...and about grayscale_prob = 0.2 of them are grey (equal channels before normalisation)
        pixels = v * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
        grey = (pixels - pixels.mean(1, keepdim=True)).abs().flatten(1).amax(1) < 1e-3
        assert 0.12 < grey.float().mean() < 0.28, grey.float().mean()
    # the two views of a sample are augmented independently
    assert ((v1 - v2).abs().flatten(1).mean(1) > 0.05).all()


def test_the_two_views_differ():
    v1, v2 = SimCLRAugment(32, MEAN, STD)(batch())
    assert (v1 - v2).abs().mean() > 0.1


def test_samples_in_a_batch_get_different_parameters():
    # the same image repeated: only per-sample randomness can make the outputs differ
    image = batch(1)
    aug = SimCLRAugment(32, MEAN, STD, SimCLRViewConfig(jitter_prob=0.0, grayscale_prob=0.0))
    v1, _ = aug(image.expand(8, -1, -1, -1))
    diffs = [(v1[0] - v1[i]).abs().mean().item() for i in range(1, 8)]
    assert min(diffs) > 0.01
    # colour jitter alone, crop off: per-sample colour parameters
    jitter_only = SimCLRAugment(
        32,
        MEAN,
        STD,
        SimCLRViewConfig(
            crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_prob=0.0, jitter_prob=1.0, grayscale_prob=0.0
        ),
    )
    c1, _ = jitter_only(image.expand(8, -1, -1, -1))
    assert min((c1[0] - c1[i]).abs().mean().item() for i in range(1, 8)) > 0.01


def test_same_seed_same_output_under_seed_everything():
    aug = SimCLRAugment(32, MEAN, STD, SimCLRViewConfig(solarize_prob=0.5))
    x = batch()
    L.seed_everything(7)
    a1, a2 = aug(x)
    L.seed_everything(7)
    b1, b2 = aug(x)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    L.seed_everything(8)
    c1, _ = aug(x)
    assert not torch.equal(a1, c1)


def test_to_view_maps_the_paper_settings():
    view = SimCLRViewConfig(jitter_strength=0.5, solarize_prob=0.2).to_view(96)
    assert isinstance(view, ViewConfig) and view.size == 96
    assert (view.brightness, view.contrast, view.saturation, view.hue) == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert view.blur_prob == 0.5 and view.blur_kernel(96) == 9 and view.solarize_prob == 0.2
    assert SimCLRViewConfig().to_view(32).blur_prob == 0.0  # below blur_min_size
    assert SimCLRViewConfig().to_view(224).blur_kernel(224) == 23  # 10 % of the side, odd
    assert SimCLRAugment(32, MEAN, STD).config.jitter_strength == 1.0


def test_identity_settings_reduce_to_normalisation():
    aug = SimCLRAugment(
        32,
        MEAN,
        STD,
        SimCLRViewConfig(
            crop_scale=(1.0, 1.0),
            crop_ratio=(1.0, 1.0),
            hflip_prob=0.0,
            jitter_prob=0.0,
            grayscale_prob=0.0,
            blur_prob=0.0,
        ),
    )
    x = batch(4)
    v1, v2 = aug(x)
    expected = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(v1, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(v2, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "kwargs",
    [{"hflip_prob": 1.5}, {"crop_scale": (0.0, 1.0)}, {"jitter_strength": -1.0}, {"grayscale_prob": -0.1}],
)
def test_invalid_view_parameters_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SimCLRViewConfig(**kwargs)


def gradients(n, size):
    """``n`` copies of an image whose red channel is 4 x its column and green channel 4 x its row
    (so an output pixel tells where in the input it was sampled), blue constant."""
    ramp = torch.arange(size, dtype=torch.uint8) * 4
    image = torch.stack(
        [
            ramp.expand(size, size),
            ramp.view(size, 1).expand(size, size),
            torch.full((size, size), 128, dtype=torch.uint8),
        ]
    )
    return image.expand(n, -1, -1, -1).contiguous()


def test_crop_flip_augment():
    aug = CropFlipAugment(32, MEAN, STD, CropFlipConfig(crop_scale=(0.2, 1.0)), resample="BICUBIC")
    L.seed_everything(0)
    out = aug(gradients(256, 64))
    assert out.shape == (256, 3, 32, 32) and out.dtype == torch.float32
    assert aug.augment.views[0].interpolation == "bicubic" and aug.augment.views[0].jitter_prob == 0.0
    # where each sample was cropped from, in input pixels: its first and last column and row
    where = (out * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255 / 4
    across = where[:, 0, :, -1].mean(1) - where[:, 0, :, 0].mean(1)  # negative: flipped
    down = where[:, 1, -1, :].mean(1) - where[:, 1, 0, :].mean(1)
    width, height = (
        across.abs() * 32 / 31 / 64,
        down * 32 / 31 / 64,
    )  # pixel centres are 31/32 of the side apart
    area, ratio = width * height, width / height
    # about hflip_prob = 0.5 of the samples are flipped, none upside down
    assert 0.4 < (across < 0).float().mean() < 0.6 and (down > 0).all()
    # crops of area and aspect within the configured ranges, spread over them
    assert (area > 0.2 - 0.02).all() and (area < 1.0 + 0.02).all(), (area.min(), area.max())
    assert (ratio > 3 / 4 - 0.03).all() and (ratio < 4 / 3 + 0.03).all(), (ratio.min(), ratio.max())
    assert area.min() < 0.25 and area.max() > 0.9 and 0.45 < area.mean() < 0.75, area.mean()
    # hflip_prob 1 with a full crop: exactly the mirrored image
    flip = CropFlipAugment(
        64, MEAN, STD, CropFlipConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_prob=1.0)
    )
    x = batch(4, 64)
    torch.testing.assert_close(flip(x), normalised(x.flip(-1)), atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        CropFlipConfig(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="resample"):
        CropFlipAugment(32, MEAN, STD, resample="LANCZOS")
