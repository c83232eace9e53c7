"""The draws of ``sample_view_params`` follow the paper's (torchvision's) distributions."""

import math

import pytest
import torch
from scipy import stats
from torchvision.transforms import RandomResizedCrop

from selfsup.augment import ViewConfig, ViewParams, sample_view_params
from selfsup.augment.params import HUE

N = 20_000


def draws(config: ViewConfig, in_hw=(1000, 1000), n=N, seed=0) -> ViewParams:
    return sample_view_params(n, in_hw, config, torch.Generator().manual_seed(seed))


def sizes(p: ViewParams) -> tuple[torch.Tensor, torch.Tensor]:
    w = (p.boxes[:, 2] - p.boxes[:, 0]).double()
    h = (p.boxes[:, 3] - p.boxes[:, 1]).double()
    return w, h


def test_crop_area_uniform_and_log_ratio_uniform_where_every_attempt_fits():
    # scale <= 0.5 and ratio <= 4/3: every attempt fits a square, so nothing is redrawn; a large
    # input makes the rounding to whole pixels negligible
    config = ViewConfig(crop_scale=(0.08, 0.5), crop_ratio=(3 / 4, 4 / 3))
    p = draws(config, in_hw=(4000, 4000))
    w, h = sizes(p)
    area = (w * h / 4000**2).numpy()
    assert stats.kstest(area, stats.uniform(0.08, 0.42).cdf).pvalue > 1e-3
    log_ratio = torch.log(w / h).numpy()
    low, high = math.log(3 / 4), math.log(4 / 3)
    assert stats.kstest(log_ratio, stats.uniform(low, high - low).cdf).pvalue > 1e-3


def test_boxes_are_whole_pixels_inside_the_image_with_uniform_offsets():
    config = ViewConfig(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0))  # always 50 x 50 of 100 x 100
    p = draws(config, in_hw=(100, 100))
    assert torch.equal(p.boxes, p.boxes.round())
    w, h = sizes(p)
    assert (w == 50).all() and (h == 50).all()
    x0, y0 = p.boxes[:, 0].long(), p.boxes[:, 1].long()
    assert x0.min() == 0 and x0.max() == 50 and y0.min() == 0 and y0.max() == 50
    # 51 positions each, uniformly
    counts = torch.bincount(x0, minlength=51).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_fallback_is_torchvisions_central_crop():
    # a 10 x 200 strip: no crop of area >= 90 % with ratio <= 4/3 fits, so every sample falls back
    config = ViewConfig(crop_scale=(0.9, 1.0), crop_ratio=(3 / 4, 4 / 3))
    p = draws(config, in_hw=(10, 200), n=64)
    top, left, height, width = RandomResizedCrop.get_params(
        torch.zeros(3, 10, 200), [0.9, 1.0], [3 / 4, 4 / 3]
    )
    expected = torch.tensor([left, top, left + width, top + height], dtype=torch.float32)
    assert (p.boxes == expected).all()
    tall = draws(config, in_hw=(200, 10), n=8)
    top, left, height, width = RandomResizedCrop.get_params(
        torch.zeros(3, 200, 10), [0.9, 1.0], [3 / 4, 4 / 3]
    )
    assert (tall.boxes == torch.tensor([left, top, left + width, top + height], dtype=torch.float32)).all()


def test_crop_sizes_match_torchvision_where_attempts_are_redrawn():
    # scale up to 1 on a 3:2 image: many attempts do not fit and are redrawn; compare the
    # distributions of crop width, height and position with torchvision's own sampler
    config = ViewConfig()
    ours = draws(config, in_hw=(200, 300), n=4000)
    torch.manual_seed(0)
    theirs = torch.tensor(
        [
            RandomResizedCrop.get_params(torch.zeros(1, 200, 300), [0.08, 1.0], [3 / 4, 4 / 3])
            for _ in range(400)
        ],
        dtype=torch.float64,
    )  # (top, left, h, w)
    w, h = sizes(ours)
    for a, b in ((w, theirs[:, 3]), (h, theirs[:, 2]), (ours.boxes[:, 0].double(), theirs[:, 1])):
        assert stats.ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3


def test_probabilities_match_within_binomial_tolerance():
    config = ViewConfig(hflip_prob=0.5, jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.3, solarize_prob=0.1)
    p = draws(config)
    for name, prob in (("flip", 0.5), ("jitter", 0.8), ("grayscale", 0.2), ("blur", 0.3), ("solarize", 0.1)):
        rate = getattr(p, name).double().mean().item()
        tolerance = 5 * math.sqrt(prob * (1 - prob) / N)
        assert abs(rate - prob) < tolerance, (name, rate, prob)
    # probabilities 0 and 1 are exact
    never = draws(ViewConfig(hflip_prob=0.0, jitter_prob=1.0, grayscale_prob=0.0), n=500)
    assert not never.flip.any() and never.jitter.all() and not never.grayscale.any()


def test_draws_are_independent_of_each_other():
    p = draws(ViewConfig(hflip_prob=0.5, grayscale_prob=0.5, blur_prob=0.5))
    table = torch.stack([p.flip, p.grayscale, p.blur], 1).long()
    joint = torch.bincount(table[:, 0] * 4 + table[:, 1] * 2 + table[:, 2], minlength=8).numpy()
    assert stats.chisquare(joint).pvalue > 1e-3  # all 8 combinations equally likely


def test_jitter_factors_lie_in_their_ranges_uniformly():
    config = ViewConfig(brightness=0.4, contrast=1.5, saturation=0.2, hue=0.1, blur_sigma=(0.1, 2.0))
    p = draws(config)
    ranges = [(0.6, 1.4), (0.0, 2.5), (0.8, 1.2), (-0.1, 0.1)]  # contrast: max(0, 1 - 1.5)
    for column, (low, high) in enumerate(ranges):
        values = p.factors[:, column].double()
        assert values.min() >= low and values.max() <= high
        assert stats.kstest(values.numpy(), stats.uniform(low, high - low).cdf).pvalue > 1e-3
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
    assert stats.kstest(p.sigma.double().numpy(), stats.uniform(0.1, 1.9).cdf).pvalue > 1e-3


def test_colour_order_is_a_uniform_permutation_per_sample():
    p = draws(ViewConfig(), n=24_000)
    assert torch.equal(p.order.sort(1).values, torch.arange(4).expand(24_000, 4))
    codes = (p.order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.unique(codes, return_counts=True)[1]
    assert len(counts) == 24  # every order occurs
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    # the hue shift comes at each of the four places, and hue_counts counts the jittered ones
    position = (p.order == HUE).int().argmax(1)
    assert p.hue_counts == tuple(torch.bincount(position[p.jitter], minlength=4).tolist())
    assert p.blur_count == int(p.blur.sum())


def test_same_generator_seed_same_draws_and_global_generator_by_default():
    config = ViewConfig(blur_prob=0.5, solarize_prob=0.5)
    a, b = draws(config, n=64, seed=3), draws(config, n=64, seed=3)
    for name in ("boxes", "flip", "jitter", "factors", "order", "grayscale", "blur", "sigma", "solarize"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.boxes, draws(config, n=64, seed=4).boxes)
    torch.manual_seed(5)
    c = sample_view_params(64, (1000, 1000), config)
    torch.manual_seed(5)
    d = sample_view_params(64, (1000, 1000), config)
    assert torch.equal(c.boxes, d.boxes) and torch.equal(c.order, d.order)


def test_to_device_keeps_the_host_copy():
    p = draws(ViewConfig(), n=8)
    moved = p.to("meta")
    assert moved.boxes.device.type == "meta" and moved.host is p and moved.hue_counts == p.hue_counts


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hflip_prob": 1.5},
        {"crop_scale": (0.0, 1.0)},
        {"crop_scale": (0.5, 0.2)},
        {"crop_ratio": (2.0, 1.0)},
        {"hue": 0.6},
        {"brightness": -0.1},
        {"blur_sigma": (0.0, 1.0)},
        {"blur_kernel_fraction": 0.0},
        {"solarize_threshold": 1.5},
        {"size": 0},
        {"interpolation": "nearest"},
    ],
)
def test_invalid_view_config_names_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ViewConfig(**kwargs)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch"):
        sample_view_params(0, (8, 8), ViewConfig())
    with pytest.raises(ValueError, match="in_hw"):
        sample_view_params(2, (0, 8), ViewConfig())
