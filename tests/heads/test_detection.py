"""The ViTDet feature pyramid and the torchvision detectors built on it."""

from __future__ import annotations

import pytest
import torch

from selfsup.augment.boxes import DetectionAugment
from selfsup.data.detection import DetectionDataModule
from selfsup.encoders import create_encoder
from selfsup.eval.detection import DetectionMAP
from selfsup.heads.detection import SimpleFeaturePyramid, build_detector
from tests.helpers import make_test_detection_set


def tiny_encoder(img_size: int = 32, patch_size: int = 4, depth: int = 1):
    return create_encoder("vit_tiny_patch16_224", img_size=img_size, patch_size=patch_size, depth=depth)


@pytest.mark.parametrize(
    ("patch", "size", "first_layer"),
    [(4, 32, torch.nn.Conv2d), (16, 64, torch.nn.ConvTranspose2d), (8, 64, torch.nn.ConvTranspose2d)],
)
def test_pyramid_levels_have_strides_4_to_32(patch, size, first_layer):
    pyramid = SimpleFeaturePyramid(tiny_encoder(size, patch), out_channels=16)
    out = pyramid(torch.randn(2, 3, size, size))
    assert list(out) == ["p2", "p3", "p4", "p5"]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        f"p{k}": (2, 16, size // 2**k, size // 2**k) for k in (2, 3, 4, 5)
    }
    assert pyramid.out_channels == 16 and pyramid.strides == (4, 8, 16, 32)
    # stride 4 is the native grid for patch 4 (no deconvolution); patch 16 needs two (ViTDet's 4x)
    assert isinstance(pyramid.levels["p2"][0], first_layer)
    deconvs = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in pyramid.levels["p2"])
    assert deconvs == {4: 0, 8: 1, 16: 2}[patch]
    assert all(torch.isfinite(v).all() for v in out.values())


def test_pyramid_reads_blocks_through_forward_intermediates():
    encoder = tiny_encoder(depth=2)
    last = SimpleFeaturePyramid(encoder, out_channels=8)
    via_intermediates = SimpleFeaturePyramid(encoder, out_channels=8, blocks=[-1])
    via_intermediates.load_state_dict(last.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(last(x).values(), via_intermediates(x).values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    two = SimpleFeaturePyramid(encoder, out_channels=8, blocks=[0, 1])
    assert two.feature_map(x).shape == (2, 2 * encoder.embed_dim, 8, 8)
    assert two(x)["p3"].shape == (2, 8, 4, 4)


def test_pyramid_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="power of two"):
        SimpleFeaturePyramid(create_encoder("vit_tiny_patch16_224", img_size=28, patch_size=14, depth=1))
    with pytest.raises(ValueError, match="strides"):
        SimpleFeaturePyramid(tiny_encoder(), strides=(8, 4))
    with pytest.raises(ValueError, match="blocks"):
        SimpleFeaturePyramid(tiny_encoder(), blocks=[3])
    with pytest.raises(TypeError, match="VisionTransformer"):
        SimpleFeaturePyramid(torch.nn.Linear(2, 2))


def _targets(n: int):
    targets = [
        {"boxes": torch.tensor([[2.0, 3.0, 20.0, 25.0]]), "labels": torch.tensor([1])} for _ in range(n)
    ]
    targets[-1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}  # no object
    return targets


@pytest.mark.parametrize("kind", ["fcos", "retinanet"])
def test_detector_trains_every_parameter_and_predicts_in_input_pixels(kind):
    torch.manual_seed(0)
    detector = build_detector(
        SimpleFeaturePyramid(tiny_encoder(), out_channels=32),
        num_classes=3,
        image_size=32,
        kind=kind,
        head_convs=1 if kind == "fcos" else 4,
    )
    transform = detector.transform
    assert (transform.min_size, transform.max_size) == ((32,), 32)
    assert transform.image_mean == list(detector.backbone.encoder.pretrained_cfg["mean"])
    losses = detector(torch.rand(3, 3, 32, 32), _targets(3))
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in detector.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    detector.eval()
    detector.score_thresh = 0.0
    with torch.no_grad():
        out = detector(torch.rand(2, 3, 32, 32))
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4 and len(out[0]["boxes"]) > 0
    assert out[0]["boxes"].min() >= 0 and out[0]["boxes"].max() <= 32  # no resize: input pixels


def test_build_detector_bad_arguments_get_clear_errors():
    pyramid = SimpleFeaturePyramid(tiny_encoder(), out_channels=8)
    with pytest.raises(ValueError, match="img_size=64"):
        build_detector(pyramid, 2, image_size=64)
    with pytest.raises(ValueError, match="multiple of the coarsest stride 32"):
        build_detector(pyramid, 2, image_size=48)
    with pytest.raises(ValueError, match="kind"):
        build_detector(pyramid, 2, image_size=32, kind="yolo")
    with pytest.raises(ValueError, match="num_classes"):
        build_detector(pyramid, 0, image_size=32)
    with pytest.raises(ValueError, match="FCOS only"):
        build_detector(pyramid, 2, image_size=32, kind="retinanet", head_convs=2)


def test_short_training_on_pasted_objects_raises_map50(tmp_path):
    """40 AdamW steps (batch 8, 64 px, patch 8, 1 block, 32-channel pyramid, FCOS with 2 convs per
    branch, crop + flip on the boxes) from a random encoder, on 64 training canvases of CIFAR-10
    airplanes and frogs (or the digits 0 and 1) with 1-2 objects each; mAP@50 on 32 held-out canvases.

    Measured (CIFAR objects): untrained mAP@50 0.000 in every run (FCOS's 0.01 classification prior
    scores no box above 0.05). After these 40 steps: 0.373 here; 0.366, 0.319, 0.591 with data and
    init seeds 0, 1, 2 in a standalone loop; with 64 pyramid channels 0.33-0.44 after 30 steps (digits
    0 and 1: 0.46). The loss falls from 2.8 to about 1.3. Cost: 8.9 s of single-thread CPU time for the
    40 steps (wall time on a loaded 2-core machine: 14-150 s, dominated by the load). The margins below
    (+0.15 mAP@50, last losses below 70 % of the first) leave room for that spread.
    """
    torch.manual_seed(0)
    root = make_test_detection_set(
        tmp_path, 96, canvas=64, seed=0, objects_per_image=(1, 2), object_size=(0.3, 0.5)
    )
    data = DetectionDataModule(str(root), num_workers=0, batch_size=8, val_fraction=1 / 3)
    data.setup()
    train = [data.train_set[i] for i in range(len(data.train_set))]
    val_images = torch.stack([data.val_set[i][0] for i in range(len(data.val_set))])
    val_targets = [data.val_set[i][1] for i in range(len(data.val_set))]
    detector = build_detector(
        SimpleFeaturePyramid(tiny_encoder(64, 8), out_channels=32), data.num_classes, 64, head_convs=2
    )
    augment = DetectionAugment(64, crop_scale=(0.5, 1.0))

    def map50() -> float:
        detector.eval()
        metric = DetectionMAP()
        with torch.no_grad():
            metric.update(detector(val_images.float() / 255), val_targets)
        detector.train()
        return float(metric.compute()["map_50"])

    before = map50()
    optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        index = torch.randint(len(train), (8,), generator=generator).tolist()
        images, targets = augment(
            torch.stack([train[i][0] for i in index]), [train[i][1] for i in index], generator=generator
        )
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = map50()
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    print(f"mAP@50 {before:.3f} -> {after:.3f}; loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    assert after > before + 0.15, (before, after)
