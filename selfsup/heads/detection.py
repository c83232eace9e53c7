"""Object detection on a plain ViT: a ViTDet simple feature pyramid and a torchvision detector on it.

The pyramid follows Li et al. 2022, "Exploring Plain Vision Transformer Backbones for Object
Detection" (ViTDet), section 3 and figure 2(c): every level is made from the ViT's *last* feature map
alone, by stride-2 deconvolutions (up) or max pooling (down), each followed by a 1x1 and a 3x3
convolution with LayerNorm, without FPN's top-down path. Reference code read:
facebookresearch/detectron2 ``detectron2/modeling/backbone/vit.py`` (``SimpleFeaturePyramid``).

The detector itself is torchvision's (no detector is hand-written here): FCOS by default, RetinaNet as
an option. Both live in this file because the pyramid exists only to feed them: the two together are
the "detection head" of an encoder, as ``segmentation.py`` is the segmentation head.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from timm.layers import LayerNorm2d
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead

Norm = Literal["layer", "group", "none"]
DetectorKind = Literal["fcos", "retinanet"]

#: ViTDet's strides: P2 (4 px) to P5 (32 px) relative to the input image
DEFAULT_STRIDES = (4, 8, 16, 32)


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "layer":
        return LayerNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return nn.Identity()


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _patch_side(encoder: VisionTransformer) -> int:
    patch = encoder.patch_embed.patch_size
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if patch[0] != patch[1]:
        raise ValueError(f"SimpleFeaturePyramid needs square patches, got {patch[0]}x{patch[1]}.")
    return int(patch[0])


class SimpleFeaturePyramid(nn.Module):
    """A timm ``VisionTransformer`` → a feature pyramid at ``strides`` pixels (ViTDet).

    The ViT's patch tokens (prefix tokens dropped) are laid back on their grid: a map at stride =
    patch size. Each level rescales that map by ``patch / stride``: a factor 2**k > 1 is k stride-2
    deconvolutions halving the channels each time (LayerNorm + GELU between them), 1 is the map
    itself, and 2**-k is a max pooling of kernel and stride 2**k; then a 1x1 convolution to
    ``out_channels`` and a 3x3 convolution, each followed by ``norm`` (ViTDet: LayerNorm). For patch
    16 the factors are ViTDet's {4, 2, 1, 1/2}; for patch 4 (CIFAR-sized configs) the stride-4 map is
    the native one and the factors are {1, 1/2, 1/4, 1/8}.

    The output is an ``OrderedDict`` ``{"p2": [B, C, H/4, W/4], "p3": ..., "p5": [B, C, H/32, W/32]}``
    (``p<k>`` has stride ``2**k``, detectron2's naming), finest first, and ``out_channels`` is an
    attribute: the backbone contract of torchvision's detectors.

    Args:
        encoder: a timm ``VisionTransformer`` (from ``selfsup.encoders.create_encoder``); the input
            images must have its image size. Patch sizes must be powers of two (1 to 64 px): the levels
            are made by factors of 2. Other patch sizes (e.g. 14) raise ``ValueError``.
        out_channels: channels of every level (ViTDet: 256).
        strides: the levels' strides in pixels, powers of two, increasing; default ``(4, 8, 16, 32)``.
        norm: ``"layer"`` (LayerNorm over channels, ViTDet), ``"group"`` (GroupNorm with 32 groups) or
            ``"none"`` (the convolutions then have biases).
        blocks: None reads ``forward_features`` (the last block, after the final norm), as ViTDet.
            A list of block indices (negative counts from the end) reads those blocks with timm's
            ``forward_intermediates(..., norm=True, output_fmt="NCHW")`` and concatenates them along
            the channels before the pyramid (``[-1]`` equals None).
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        out_channels: int = 256,
        strides: Sequence[int] = DEFAULT_STRIDES,
        norm: Norm = "layer",
        blocks: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, VisionTransformer):
            raise TypeError(
                f"SimpleFeaturePyramid needs a timm VisionTransformer (selfsup.encoders.create_encoder), "
                f"got {type(encoder).__name__}."
            )
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}.")
        if norm not in ("layer", "group", "none"):
            raise ValueError(f"norm must be 'layer', 'group' or 'none', got {norm!r}.")
        strides = tuple(int(s) for s in strides)
        if (
            not strides
            or any(not _is_power_of_two(s) for s in strides)
            or list(strides) != sorted(set(strides))
        ):
            raise ValueError(
                f"strides must be increasing distinct powers of two (e.g. (4, 8, 16, 32)), got {strides}."
            )
        patch = _patch_side(encoder)
        if not _is_power_of_two(patch) or patch > 64:
            raise ValueError(
                f"SimpleFeaturePyramid makes its levels by factors of 2 from the stride-{patch} patch grid, "
                f"so the patch size must be a power of two between 1 and 64 (4 for 32-px images, 16 for "
                f"224-px); got {patch}. Build the encoder with create_encoder(..., patch_size=16) or 4."
            )
        depth = len(encoder.blocks)
        if blocks is not None:
            blocks = [int(b) for b in blocks]
            if not blocks or any(not -depth <= b < depth for b in blocks):
                raise ValueError(
                    f"blocks must be a non-empty list of block indices in [-{depth}, {depth - 1}] "
                    f"(the encoder has {depth} blocks), got {blocks}."
                )
        self.encoder = encoder
        self.patch_size = patch
        self.strides = strides
        self.out_channels = out_channels
        self.blocks = blocks
        dim = encoder.embed_dim * (1 if blocks is None else len(blocks))
        use_bias = norm == "none"
        levels = {}
        for stride in strides:
            layers: list[nn.Module] = []
            channels = dim
            if stride < patch:  # upsample by patch / stride = 2**k: k deconvolutions
                for step in range(int(math.log2(patch // stride))):
                    if step:
                        layers += [_norm(norm, channels), nn.GELU()]
                    layers.append(
                        nn.ConvTranspose2d(channels, max(channels // 2, 1), kernel_size=2, stride=2)
                    )
                    channels = max(channels // 2, 1)
            elif stride > patch:
                layers.append(nn.MaxPool2d(kernel_size=stride // patch, stride=stride // patch))
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size=1, bias=use_bias),
                _norm(norm, out_channels),
                nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=use_bias),
                _norm(norm, out_channels),
            ]
            levels[f"p{int(math.log2(stride))}"] = nn.Sequential(*layers)
        self.levels = nn.ModuleDict(levels)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images → the ViT's map ``[B, D, H/p, W/p]`` (``D`` times the
        number of ``blocks`` when several are read)."""
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}."
            )
        if self.blocks is not None:
            maps = self.encoder.forward_intermediates(
                images, indices=self.blocks, norm=True, output_fmt="NCHW", intermediates_only=True
            )
            return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)
        tokens = self.encoder.forward_features(images)[:, self.encoder.num_prefix_tokens :]  # [B, L, D]
        grid = (height // self.patch_size, width // self.patch_size)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.feature_map(images)
        return OrderedDict((name, level(features)) for name, level in self.levels.items())


def build_detector(
    backbone: SimpleFeaturePyramid,
    num_classes: int,
    image_size: int,
    kind: DetectorKind = "fcos",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    head_convs: int = 4,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
) -> FCOS | RetinaNet:
    """A torchvision detector on a feature pyramid, for square ``image_size`` images.

    **FCOS is the default** (Tian et al. 2019): it is anchor-free (one point per location; a point inside a
    box trains on the level whose range ``(4, 8) x stride`` holds its largest distance to the box's
    sides, the finest level from 0 and the coarsest to infinity), so nothing needs tuning when the
    pyramid's strides change with the patch size (4..32 here instead of torchvision's 8..128), and it
    is one stage: one loss, no proposal stage to balance, which suits short fine-tunes. RetinaNet
    (Lin et al. 2017) is the anchor-based alternative; its anchors are sized 4, 5 and 6.3 times each
    level's stride with aspect ratios 1:2, 1:1, 2:1 (torchvision's rule: 32 px at stride 8).

    **Inputs and normalisation**: the detector takes *float images in [0, 1]*, ``[B, 3, S, S]`` (or a
    list of ``[3, S, S]``), as every torchvision detector does, and normalises them itself with
    ``mean`` / ``std`` (default: the encoder's ``pretrained_cfg``, i.e. what it was pretrained with). So
    the training augmentation should output unit floats (``selfsup.augment.boxes.DetectionAugment``
    with ``mean=std=None``), and an exported detector needs no preprocessing knowledge. Its
    ``GeneralizedRCNNTransform`` gets ``min_size = max_size = image_size`` and ``size_divisible`` =
    the coarsest stride, so a square ``image_size`` input is neither resized (scale 1) nor padded,
    and boxes come back in the input's pixels.

    Args:
        backbone: a :class:`SimpleFeaturePyramid` (or any module with ``out_channels``, ``strides``
            and an ``OrderedDict`` output, one map per stride).
        num_classes: object classes, labels ``0..num_classes-1`` (no background class: both detectors
            classify with per-class sigmoids).
        image_size: side of the square input images; a multiple of the coarsest stride.
        kind: ``"fcos"`` or ``"retinanet"``.
        mean, std: normalisation of the [0, 1] inputs; default the encoder's.
        head_convs: 3x3 convolutions in each FCOS branch (torchvision: 4); RetinaNet's head has 4.
        score_thresh: detections scoring less are dropped (0.05: the COCO evaluation convention).
        nms_thresh: IoU of the per-class non-maximum suppression.
        detections_per_img: at most this many detections per image.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if kind not in ("fcos", "retinanet"):
        raise ValueError(f"kind must be 'fcos' or 'retinanet', got {kind!r}.")
    if head_convs < 1:
        raise ValueError(f"head_convs must be >= 1, got {head_convs}.")
    if kind == "retinanet" and head_convs != 4:
        raise ValueError(
            "head_convs applies to FCOS only (torchvision's RetinaNet head has 4): leave it at 4."
        )
    strides = tuple(getattr(backbone, "strides", ()))
    if not strides or not hasattr(backbone, "out_channels"):
        raise ValueError(
            "backbone needs 'strides' and 'out_channels' attributes, as SimpleFeaturePyramid has."
        )
    encoder = getattr(backbone, "encoder", None)
    patch = getattr(backbone, "patch_size", 1)
    step = math.lcm(max(strides), patch)
    if image_size % step:
        raise ValueError(
            f"image_size {image_size} must be a multiple of the coarsest stride {max(strides)} and of the patch "
            f"size {patch}: try {max(step, round(image_size / step) * step)}."
        )
    if isinstance(encoder, VisionTransformer) and not getattr(encoder, "dynamic_img_size", False):
        encoder_size = encoder.patch_embed.img_size
        encoder_size = encoder_size if isinstance(encoder_size, int) else encoder_size[0]
        if encoder_size != image_size:
            raise ValueError(
                f"the encoder takes {encoder_size}-px images but image_size is {image_size}: build the encoder "
                f"with create_encoder(..., img_size={image_size}) or set image_size={encoder_size}."
            )
    if mean is None or std is None:
        cfg = getattr(encoder, "pretrained_cfg", None) or {}
        mean = mean if mean is not None else cfg.get("mean", (0.485, 0.456, 0.406))
        std = std if std is not None else cfg.get("std", (0.229, 0.224, 0.225))
    common = dict(
        min_size=image_size,
        max_size=image_size,
        image_mean=[float(m) for m in mean],
        image_std=[float(s) for s in std],
        size_divisible=max(strides),
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    channels = backbone.out_channels
    if kind == "fcos":
        # FCOS reads one "anchor" per location whose side is the level's stride: its size ranges
        # (0-64, 64-128, ... in torchvision) are 4 and 8 times that side.
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        head = FCOSHead(channels, 1, num_classes, num_convs=head_convs)
        return FCOS(backbone, num_classes, anchor_generator=anchors, head=head, **common)
    sizes = tuple(tuple(round(4 * s * 2 ** (i / 3)) for i in range(3)) for s in strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
    head = RetinaNetHead(channels, anchors.num_anchors_per_location()[0], num_classes)
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, **common)
