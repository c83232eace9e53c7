"""Segmentation augmentation: masks follow the images' crop and flip, with nearest sampling."""

import torch
import torchvision.transforms.v2.functional as TF

from selfsup.augment import CropFlipConfig, SegmentationAugment, sample_view_params

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_masks_follow_the_crop_and_flip_with_nearest_sampling():
    n, size = 8, 12
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 5, (n, 20, 24), generator=g)
    images = (masks * 50).to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous()
    augment = SegmentationAugment(size, MEAN, STD, CropFlipConfig(crop_scale=(0.3, 1.0)))
    torch.manual_seed(5)
    out_images, out_masks = augment(images, masks)
    torch.manual_seed(5)
    params = sample_view_params(n, (20, 24), augment.view)  # the draws the call made
    assert out_images.shape == (n, 3, size, size) and out_masks.shape == (n, size, size)
    assert out_masks.dtype == torch.int64 and set(out_masks.unique().tolist()) <= set(range(5))
    for i in range(n):
        x0, y0, x1, y1 = (int(v) for v in params.boxes[i])
        crop = TF.resized_crop(
            masks[i][None],
            y0,
            x0,
            y1 - y0,
            x1 - x0,
            [size, size],
            interpolation=TF.InterpolationMode.NEAREST_EXACT,
        )[0]
        expected = crop.flip(-1) if params.flip[i] else crop
        assert torch.equal(out_masks[i], expected), i
    # the image went through the same crop: where the mask is constant around a pixel, so is the image
    assert params.flip.any() and not params.flip.all()
