"""The batched view op: equal to torchvision's functional ops per sample, given the same parameters;
per-sample randomness; a kernel count independent of the batch size; no host reads."""

import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from selfsup.augment import MultiViewAugment, ViewConfig, ViewParams, apply_view, sample_view_params
from selfsup.augment.blur import blur
from tests.helpers import count_dispatches, count_host_reads

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # no normalisation: outputs in [0, 1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EVERYTHING = ViewConfig(
    brightness=0.8,
    contrast=0.8,
    saturation=0.8,
    hue=0.4,
    grayscale_prob=0.3,
    blur_prob=0.5,
    blur_kernel_fraction=0.4,
    solarize_prob=0.5,
)
ADJUST = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def images(n=8, hw=(16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *hw), dtype=torch.uint8, generator=g)


def reference(image: torch.Tensor, p: ViewParams, i: int, config: ViewConfig, size: int) -> torch.Tensor:
    """One sample through torchvision's functional ops, in the paper's order, with sample i's draws."""
    x0, y0, x1, y1 = (int(v) for v in p.boxes[i])
    mode = (
        TF.InterpolationMode.BICUBIC if config.interpolation == "bicubic" else TF.InterpolationMode.BILINEAR
    )
    out = TF.resized_crop(image, y0, x0, y1 - y0, x1 - x0, [size, size], interpolation=mode, antialias=True)
    out = out.clamp(0, 1)
    if p.flip[i]:
        out = TF.horizontal_flip(out)
    if p.jitter[i]:
        for op in p.order[i].tolist():
            out = ADJUST[op](out, float(p.factors[i, op]))
    if p.grayscale[i]:
        out = TF.rgb_to_grayscale(out, num_output_channels=3)
    if p.blur[i]:
        k = config.blur_kernel(size)
        out = TF.gaussian_blur(out, [k, k], [float(p.sigma[i])] * 2)
    if p.solarize[i]:
        out = TF.solarize(out, config.solarize_threshold)
    return out


@pytest.mark.parametrize(
    "in_hw, size, interpolation",
    [((16, 16), 16, "bilinear"), ((20, 24), 16, "bilinear"), ((16, 16), 12, "bicubic")],
    ids=["grid_sample", "shrinking-matrices", "bicubic-matrices"],
)
def test_whole_view_equals_torchvision_per_sample(in_hw, size, interpolation):
    config = dataclasses.replace(EVERYTHING, size=size, interpolation=interpolation)
    x = images(32, in_hw).float() / 255
    p = sample_view_params(32, in_hw, config, torch.Generator().manual_seed(1))
    out = apply_view(x, p, config, ZERO, ONE)
    expected = torch.stack([reference(x[i], p, i, config, size) for i in range(32)])
    # float32 arithmetic in a different order: a few ulps of the [0, 1] range
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)
    assert p.jitter.any() and p.blur.any() and p.solarize.any() and p.grayscale.any() and p.flip.any()


def identity_params(n: int, size: int, **draws) -> ViewParams:
    """Whole-image crop, no flip, every draw off unless given: to isolate one operation."""
    fields = {
        "boxes": torch.tensor([[0.0, 0.0, size, size]]).expand(n, 4).clone(),
        "flip": torch.zeros(n, dtype=torch.bool),
        "jitter": torch.zeros(n, dtype=torch.bool),
        "factors": torch.tensor([[1.0, 1.0, 1.0, 0.0]]).expand(n, 4).clone(),
        "order": torch.arange(4).expand(n, 4).clone(),
        "grayscale": torch.zeros(n, dtype=torch.bool),
        "blur": torch.zeros(n, dtype=torch.bool),
        "sigma": torch.ones(n),
        "solarize": torch.zeros(n, dtype=torch.bool),
    }
    return ViewParams(**{**fields, **draws}, in_hw=(size, size))


@pytest.mark.parametrize("op", [0, 1, 2, 3], ids=["brightness", "contrast", "saturation", "hue"])
def test_each_colour_op_equals_torchvision(op):
    n, size = 6, 12
    x = images(n, (size, size), seed=op).float() / 255
    values = (
        torch.tensor([0.3, 0.7, 1.0, 1.3, 1.6, 1.9])
        if op < 3
        else torch.tensor([-0.5, -0.3, -0.1, 0.1, 0.3, 0.5])
    )
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(n, 1)
    factors[:, op] = values
    order = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(n)])
    p = identity_params(n, size, jitter=torch.ones(n, dtype=torch.bool), factors=factors, order=order)
    config = ViewConfig(size=size, jitter_prob=1.0, grayscale_prob=0.0, hue=0.5)
    out = apply_view(x, p, config, ZERO, ONE)
    expected = torch.stack([ADJUST[op](x[i], float(values[i])) for i in range(n)])
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)


def test_grayscale_blur_and_solarize_equal_torchvision():
    n, size = 6, 16
    x = images(n, (size, size)).float() / 255
    on = torch.tensor([True, False, True, True, False, True])
    sigma = torch.tensor([0.3, 1.0, 0.8, 1.5, 2.0, 2.5])
    config = ViewConfig(
        size=size, jitter_prob=0.0, grayscale_prob=0.5, blur_prob=0.5, blur_kernel_fraction=0.5
    )
    k = config.blur_kernel(size)
    out = apply_view(x, identity_params(n, size, grayscale=on), config, ZERO, ONE)
    expected = torch.where(on[:, None, None, None], TF.rgb_to_grayscale(x, 3), x)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)
    out = apply_view(x, identity_params(n, size, blur=on, sigma=sigma), config, ZERO, ONE)
    expected = torch.stack(
        [TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2) if on[i] else x[i] for i in range(n)]
    )
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)
    solar = dataclasses.replace(
        config, blur_prob=0.0, grayscale_prob=0.0, solarize_prob=0.5, solarize_threshold=0.4
    )
    out = apply_view(x, identity_params(n, size, solarize=on), solar, ZERO, ONE)
    expected = torch.where(on[:, None, None, None], TF.solarize(x, 0.4), x)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)


def test_uint8_input_and_normalisation():
    config = dataclasses.replace(EVERYTHING, size=16)
    x = images(16)
    p = sample_view_params(16, (16, 16), config, torch.Generator().manual_seed(0))
    from_uint8 = apply_view(x, p, config, MEAN, STD)
    unit = apply_view(x.float() / 255, p, config, ZERO, ONE)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(from_uint8, (unit - mean) / std, atol=1e-4, rtol=0)
    assert from_uint8.dtype == torch.float32 and from_uint8.shape == (16, 3, 16, 16)


def test_half_precision_outputs_stay_close():
    """Over 300 seeded draws of these parameters (2026-12-02) the float16 computation's largest error
    was 0.97 / 255 at the median, 2.16 / 255 at the 99th percentile and 2.80 / 255 at worst; the bound
    is 3 / 255. (The draw used the global generator before, so the test's outcome depended on which
    tests ran first in its worker: 4 of the 300 draws exceed the 2 / 255 it had.)"""
    config = dataclasses.replace(EVERYTHING, size=16)
    x = images(16)
    p = sample_view_params(16, (16, 16), config, torch.Generator().manual_seed(0))
    exact = apply_view(x, p, config, ZERO, ONE)
    bf16 = apply_view(x, p, config, ZERO, ONE, out_dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), exact, atol=4e-3, rtol=0)  # bf16 rounding of [0, 1]
    fp16 = apply_view(x, p, config, ZERO, ONE, compute_dtype=torch.float16)
    assert fp16.dtype == torch.float32
    assert (fp16 - exact).abs().max() < 3 / 255


def test_views_and_samples_differ_and_seeds_reproduce():
    augment = MultiViewAugment([dataclasses.replace(EVERYTHING, size=16)] * 2, MEAN, STD)
    one = images(1).expand(8, -1, -1, -1)  # one image eight times: only per-sample draws differ
    first, second = augment(one)
    assert (first - second).abs().mean() > 0.1  # the two views of each image differ
    per_sample = [(first[0] - first[i]).abs().mean() for i in range(1, 8)]
    assert min(per_sample) > 0.01
    torch.manual_seed(3)
    a = augment(one)
    torch.manual_seed(3)
    b = augment(one)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    c, _ = augment.forward_with_params(one, generator=torch.Generator().manual_seed(3))
    d, params = augment.forward_with_params(one, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(c, d, strict=True))
    assert len(params) == 2 and params[0].boxes.device.type == "cpu"


DINO_LIKE = [
    ViewConfig(size=16, crop_scale=(0.4, 1.0), blur_prob=1.0, blur_kernel_fraction=0.3),
    ViewConfig(size=16, crop_scale=(0.4, 1.0), blur_prob=0.1, blur_kernel_fraction=0.3, solarize_prob=0.2),
    ViewConfig(size=8, crop_scale=(0.05, 0.4), blur_prob=0.5, blur_kernel_fraction=0.3),
    ViewConfig(size=8, crop_scale=(0.05, 0.4), blur_prob=0.5, blur_kernel_fraction=0.3),
]


def test_multi_crop_views_of_two_sizes():
    views = MultiViewAugment(DINO_LIKE, MEAN, STD, out_dtype=torch.bfloat16)(images(4))
    assert [tuple(v.shape) for v in views] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 2
    assert all(v.dtype == torch.bfloat16 and torch.isfinite(v.float()).all() for v in views)


def test_kernel_count_does_not_depend_on_the_batch_size():
    views = [
        dataclasses.replace(EVERYTHING, size=16),
        DINO_LIKE[1],
        DINO_LIKE[2],
    ]  # grid, + solarize, matrices
    everything, on_device = [], []
    for n in (8, 256):
        with count_dispatches() as ops:  # every op of one view, the host-side planning included
            MultiViewAugment(views[:1], MEAN, STD)(images(n))
        everything.append(ops)
        with count_dispatches(devices=("meta",), kernels_only=True) as ops:  # what a GPU would launch
            MultiViewAugment(views, MEAN, STD)(images(n).to("meta"))
        on_device.append(ops)
    assert everything[0] == everything[1], set(everything[0].items()) ^ set(everything[1].items())
    assert on_device[0] == on_device[1]
    # a fixed budget per view: the hue shift in 4 groups (about 25 kernels each) dominates
    assert sum(on_device[0].values()) < 200 * len(views), on_device[0]
    assert on_device[0]["grid_sampler_2d"] == 2 and on_device[0]["bmm"] >= 2  # 1 shrinking view
    assert on_device[0]["convolution"] == 2 * len(views)


def test_no_host_reads_while_applying_and_none_of_device_data_ever():
    config = dataclasses.replace(EVERYTHING, size=16)
    x = images(8)
    params = sample_view_params(8, (16, 16), config)
    with count_host_reads() as calls:  # every tensor, the host-side planning included
        apply_view(x, params, config, MEAN, STD)
    assert calls == []
    # a whole multi-view call with the batch on the meta device (no data: a read would fail):
    # drawing parameters reads its own CPU draws, the batch is never read
    augment = MultiViewAugment([config, DINO_LIKE[1], DINO_LIKE[2]], MEAN, STD)
    on_device = x.to("meta")
    with count_host_reads(devices=("meta",)) as calls:
        views = augment(on_device)
    assert calls == [] and all(v.device.type == "meta" for v in views)


def test_bad_inputs_say_what_to_fix():
    config = ViewConfig(size=8)
    params = sample_view_params(4, (16, 16), config)
    with pytest.raises(ValueError, match="drawn for 4 images"):
        apply_view(images(5), params, config, MEAN, STD)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        apply_view(images(4)[:, :1], params, config, MEAN, STD)
    with pytest.raises(TypeError, match="uint8 or float"):
        apply_view(images(4).int(), params, config, MEAN, STD)
    with pytest.raises(ValueError, match="mean and std"):
        apply_view(images(4), params, config, (0.5, 0.5), STD)
    with pytest.raises(ValueError, match="size is None"):
        apply_view(
            images(4, (16, 12)), sample_view_params(4, (16, 12), ViewConfig()), ViewConfig(), MEAN, STD
        )
    with pytest.raises(ValueError, match="at least one"):
        MultiViewAugment([], MEAN, STD)
    with pytest.raises(ValueError, match="blur kernel"):
        blur(torch.zeros(1, 3, 4, 4), torch.ones(1, 9) / 9)


MOTION_BLUR = {
    "class_path": "kornia.augmentation.RandomMotionBlur",
    "init_args": {"kernel_size": 5, "angle": 35.0, "direction": 0.5, "p": 1.0},
}


def test_a_view_takes_kornia_augmentations_reproducibly_and_reads_no_device_data():
    plain = ViewConfig(size=16, jitter_prob=0.0, grayscale_prob=0.0)
    blurred = dataclasses.replace(plain, kornia=(MOTION_BLUR,))
    never = dataclasses.replace(
        plain, kornia=({**MOTION_BLUR, "init_args": {**MOTION_BLUR["init_args"], "p": 0.0}},)
    )
    x = images(8)

    def views(config, seed=0):
        torch.manual_seed(seed)
        return MultiViewAugment([config], MEAN, STD)(x)[0]

    # the built-in ops draw first, so under one seed the views differ by the Kornia op alone
    assert torch.equal(views(blurred), views(blurred))  # reproducible under a seed
    assert not torch.equal(views(blurred), views(blurred, seed=1))
    assert (views(blurred) - views(plain)).abs().mean() > 0.01  # it was applied
    # applied after the built-in ops and before normalisation (equal up to the [0, 1] round trip)
    torch.testing.assert_close(views(never), views(plain), rtol=0, atol=1e-5)
    # the functional form applies it too
    torch.manual_seed(0)
    params = sample_view_params(8, (16, 16), blurred)
    assert torch.equal(apply_view(x, params, blurred, MEAN, STD), views(blurred))
    # device data is never read: Kornia's CPU-drawn parameters are only copied to the device
    augment = MultiViewAugment([blurred], MEAN, STD)
    with count_host_reads(devices=("meta",)) as calls:
        (out,) = augment(x.to("meta"))
    assert out.device.type == "meta" and out.shape == (8, 3, 16, 16)
    assert all(call.startswith("blocking copy of a host tensor") for call in calls), calls


def test_a_kornia_entry_that_is_not_one_says_what_to_write():
    with pytest.raises(ValueError, match="a kornia entry takes class_path"):
        ViewConfig(kornia=({"class_path": "torchvision.transforms.GaussianBlur"},))
    with pytest.raises(ValueError, match="each kornia entry is a mapping with a class_path"):
        ViewConfig(kornia=(3,))
    with pytest.raises(
        ValueError, match="has no augmentation 'RandomMotionBlurr'. Did you mean 'RandomMotionBlur'"
    ):
        MultiViewAugment(
            [ViewConfig(kornia=({"class_path": "kornia.augmentation.RandomMotionBlurr"},))], MEAN, STD
        )
