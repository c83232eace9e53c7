"""Batched crop + flip + resize of images with their boxes."""

from __future__ import annotations

import pytest
import torch

from selfsup.augment.boxes import (
    BoxCrops,
    DetectionAugment,
    crop_flip_resize_boxes,
    crop_flip_resize_images,
    pad_targets,
    sample_crops,
    unpad_targets,
)


def naive_box(box, crop, flip, size, min_visible, min_size):
    """One box, by hand: None when dropped."""
    x1, y1, x2, y2 = box
    cx1, cy1, cx2, cy2 = crop
    sx, sy = size / (cx2 - cx1), size / (cy2 - cy1)
    moved = [(x1 - cx1) * sx, (y1 - cy1) * sy, (x2 - cx1) * sx, (y2 - cy1) * sy]
    clipped = [min(max(v, 0.0), size) for v in moved]
    width, height = clipped[2] - clipped[0], clipped[3] - clipped[1]
    area = (moved[2] - moved[0]) * (moved[3] - moved[1])
    if area <= 0 or width * height / area < min_visible or width < min_size or height < min_size:
        return None
    if flip:
        clipped = [size - clipped[2], clipped[1], size - clipped[0], clipped[3]]
    return clipped


def random_targets(generator, batch, side):
    targets = []
    for i in range(batch):
        n = i % 4  # 0..3 boxes, one image without any
        xy = torch.rand(n, 2, generator=generator) * (side - 4)
        wh = 1 + torch.rand(n, 2, generator=generator) * (side / 2)
        boxes = torch.cat([xy, (xy + wh).clamp(max=side)], dim=1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, 5, (n,), generator=generator)})
    return targets


@pytest.mark.parametrize(("min_visible", "min_size"), [(0.5, 1.0), (0.1, 0.0), (1.0, 2.0)])
def test_boxes_match_a_naive_per_box_computation(min_visible, min_size):
    generator = torch.Generator().manual_seed(0)
    batch, side, size = 12, 40, 24
    targets = random_targets(generator, batch, side)
    params = sample_crops(batch, side, side, scale=(0.2, 1.0), hflip_prob=0.5, generator=generator)
    assert params.flips.any() and not params.flips.all()
    boxes, labels, valid = pad_targets(targets)
    out, keep = crop_flip_resize_boxes(boxes, valid, params, size, min_visible, min_size)
    result = unpad_targets(out, labels, keep)
    kept_any = dropped_any = False
    for i, target in enumerate(targets):
        expected_boxes, expected_labels = [], []
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            new = naive_box(box, params.crops[i].tolist(), bool(params.flips[i]), size, min_visible, min_size)
            if new is not None:
                expected_boxes.append(new)
                expected_labels.append(label)
            kept_any |= new is not None
            dropped_any |= new is None
        torch.testing.assert_close(
            result[i]["boxes"], torch.tensor(expected_boxes).reshape(-1, 4), atol=1e-4, rtol=0
        )
        assert result[i]["labels"].tolist() == expected_labels
    assert kept_any and dropped_any  # both branches of the rule were exercised


def test_boxes_follow_the_image():
    """White rectangles on black: after the op, each kept box is the rectangle's extent in the output."""
    generator = torch.Generator().manual_seed(1)
    batch, side, size = 8, 48, 32
    images = torch.zeros(batch, 3, side, side, dtype=torch.uint8)
    targets = []
    for i in range(batch):
        x, y = torch.randint(0, side - 20, (2,), generator=generator).tolist()
        w, h = torch.randint(10, 20, (2,), generator=generator).tolist()
        images[i, :, y : y + h, x : x + w] = 255
        targets.append(
            {"boxes": torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32), "labels": torch.tensor([i])}
        )
    out, result = DetectionAugment(size, crop_scale=(0.3, 1.0), min_visible=0.3)(
        images, targets, generator=generator
    )
    assert out.shape == (batch, 3, size, size) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    checked = 0
    for i in range(batch):
        if len(result[i]["boxes"]) == 0:
            continue
        rows, cols = torch.nonzero(out[i, 0] > 0.5, as_tuple=True)
        extent = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
        torch.testing.assert_close(result[i]["boxes"][0], extent, atol=1.0, rtol=0)
        assert result[i]["labels"].tolist() == [i]
        checked += 1
    assert checked >= batch // 2


def test_whole_image_crop_without_flip_is_a_resize_and_flip_mirrors():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    whole = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2)
    same = crop_flip_resize_images(images, BoxCrops(whole, torch.tensor([False, True])), 16)
    torch.testing.assert_close(same[0], images[0].float() / 255)
    torch.testing.assert_close(same[1], images[1].float().flip(-1) / 255)


def test_sampled_crops_lie_in_the_image_with_the_asked_area():
    params = sample_crops(
        500, 30, 50, scale=(0.2, 0.6), ratio=(0.5, 2.0), generator=torch.Generator().manual_seed(0)
    )
    crops = params.crops
    assert (crops[:, :2] >= 0).all() and (crops[:, 2] <= 50 + 1e-4).all() and (crops[:, 3] <= 30 + 1e-4).all()
    area = (crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1]) / (30 * 50)
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 0.6 + 1e-4
    assert 0.4 < params.flips.float().mean() < 0.6


def test_pad_unpad_round_trip_and_normalised_output():
    targets = random_targets(torch.Generator().manual_seed(2), 5, 20)
    boxes, labels, valid = pad_targets(targets)
    assert boxes.shape == (5, 3, 4) and valid.sum() == sum(len(t["labels"]) for t in targets)
    for a, b in zip(unpad_targets(boxes, labels, valid), targets, strict=True):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
    images = torch.full((5, 3, 20, 20), 255, dtype=torch.uint8)
    out, _ = DetectionAugment(8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(images, targets)
    torch.testing.assert_close(out, torch.full_like(out, 2.0))


def test_bad_arguments_get_clear_errors():
    for kwargs, name in [
        ({"size": 0}, "size"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
        ({"hflip_prob": 2.0}, "hflip_prob"),
        ({"min_visible": 0.0}, "min_visible"),
        ({"mean": (0.5, 0.5, 0.5)}, "mean and std"),
    ]:
        with pytest.raises(ValueError, match=name):
            DetectionAugment(**{"size": 8, **kwargs})
    with pytest.raises(ValueError, match="B targets"):
        DetectionAugment(8)(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [])
    with pytest.raises(ValueError, match="boxes must be"):
        pad_targets([{"boxes": torch.zeros(2, 5), "labels": torch.zeros(2)}])
