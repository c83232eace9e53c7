"""Object detection: a ViTDet simple feature pyramid on the encoder and a torchvision detector (FCOS
by default) on the pyramid; COCO box mAP, mAP@50 and mAP@75 on the validation split.

Batches are :class:`~selfsup.data.detection.DetectionDataModule`'s: uint8 images ``[B, 3, S, S]`` and
torchvision's list of ``{"boxes": float [N, 4] xyxy pixels, "labels": int64 [N]}``. The detector
takes float images in [0, 1] and normalises them itself (see
:func:`selfsup.heads.detection.build_detector`), so the task never normalises.

**Who owns the encoder**: ``FineTune.encoder`` does (its weights are ``encoder.*`` in checkpoints, as
for every task, and the strategy prepares it). The pyramid inside the detector *uses* the same
module without registering it a second time, so the task's parameters and state dict are the
pyramid and the detector's head only: no duplicated keys, no parameter in two optimiser groups.

**Host syncs**: the targets stay on the host through the device transfer (``host_targets``); the
crop parameters are drawn there, the boxes are cropped, flipped, clipped and dropped there (reading
the number of boxes kept per image is then free), and only then are the boxes sent to the device,
pinned and non-blocking, as the crop parameters are. So nothing in selfsup's part of a training
step waits for the device. torchvision's detectors do, inside their forward (FCOS's degenerate-box
check and its ``num_foreground.item()``, the transform's size bookkeeping): those are torchvision's
own internals and are not counted here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from selfsup.augment.boxes import (
    BoxCrops,
    DetectionAugment,
    crop_flip_resize_boxes,
    crop_flip_resize_images,
    pad_targets,
    unpad_targets,
)
from selfsup.augment.crop_flip import CropFlipConfig
from selfsup.augment.normalize import to_unit_float
from selfsup.contract import plain
from selfsup.finetune.tasks.base import Task

Targets = list[dict[str, torch.Tensor]]

#: the fine-tuning strategies that apply: the encoder's map must stay what the pyramid reads
#: (``forward_features``), so strategies that change the token sequence (prompt) or add layers that
#: plain timm lacks (adapter) are out, and partial / bitfit are not offered (ViTDet fine-tunes all
#: weights with layer-wise decay; LoRA and a frozen encoder are the parameter-efficient choices).
DETECTION_STRATEGIES = ("full", "lora", "linear")


@dataclass(frozen=True)
class DetectorConfig:
    """The detector on the encoder: pyramid, head and post-processing, and which boxes survive a crop.

    Attributes:
        kind: ``fcos`` (anchor-free, the default) or ``retinanet``.
        channels: channels of every pyramid level (ViTDet: 256; 64 to 128 are enough for ViT-Tiny).
        strides: the pyramid's strides in pixels (powers of two); the image size must be a multiple
            of the largest and of the patch size.
        norm: ``layer`` (ViTDet), ``group`` or ``none`` in the pyramid.
        blocks: None reads the last block (after the final norm), as ViTDet; a list of block indices
            concatenates those blocks' maps.
        head_convs: 3x3 convolutions per FCOS branch (torchvision: 4).
        score_thresh, nms_thresh, detections_per_img: post-processing of the predictions.
        min_visible, min_size: a box cut by the training crop is kept when that share of its area
            and at least that many output pixels in width and height remain.
    """

    kind: Literal["fcos", "retinanet"] = "fcos"
    channels: int = 256
    strides: tuple[int, ...] = (4, 8, 16, 32)
    norm: Literal["layer", "group", "none"] = "layer"
    blocks: tuple[int, ...] | None = None
    head_convs: int = 4
    score_thresh: float = 0.05
    nms_thresh: float = 0.6
    detections_per_img: int = 100
    min_visible: float = 0.5
    min_size: float = 1.0


def _send(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``: pinned and non-blocking to a GPU (the host does not wait)."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def send_targets(targets: Sequence[dict[str, torch.Tensor]], device: torch.device) -> Targets:
    return [{key: _send(value, device) for key, value in target.items()} for target in targets]


def build_detection_head(
    encoder: nn.Module,
    num_classes: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    config: DetectorConfig,
) -> nn.Module:
    """``build_detector(SimpleFeaturePyramid(encoder, ...))`` as ``config`` says: the one place the
    detector is assembled (the task, and :func:`selfsup.finetune.export.load_detector`)."""
    from selfsup.heads.detection import SimpleFeaturePyramid, build_detector

    pyramid = SimpleFeaturePyramid(
        encoder,
        out_channels=config.channels,
        strides=config.strides,
        norm=config.norm,
        blocks=None if config.blocks is None else list(config.blocks),
    )
    return build_detector(
        pyramid,
        num_classes,
        image_size,
        kind=config.kind,
        mean=mean,
        std=std,
        head_convs=config.head_convs,
        score_thresh=config.score_thresh,
        nms_thresh=config.nms_thresh,
        detections_per_img=config.detections_per_img,
    )


class Detection(Task):
    """Args:
    num_classes: object classes (labels ``0..num_classes-1``; no background class).
    encoder: the fine-tune's timm ``VisionTransformer`` (owned by ``FineTune``; used, not registered).
    image_size: side of the square batches; the encoder's image size.
    mean, std: the detector's normalisation of its [0, 1] inputs (the encoder's).
    augment: the training crop and flip (applied to the boxes too).
    config: the detector (:class:`DetectorConfig`).
    """

    name = "detection"
    features = "images"  # the detector runs the encoder itself, through its pyramid
    strategies = DETECTION_STRATEGIES
    needs_targets = True  # torchvision's detectors compute their loss inside the forward
    host_targets = True  # boxes stay on the host until augmented (no sync), see the module docstring

    def __init__(
        self,
        num_classes: int,
        encoder: nn.Module,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: CropFlipConfig | None = None,
        config: DetectorConfig | None = None,
    ) -> None:
        super().__init__(num_classes)
        from timm.models.vision_transformer import VisionTransformer

        from selfsup.eval.detection import DetectionMAP

        if not isinstance(encoder, VisionTransformer):
            raise ValueError(
                f"detection needs a Vision Transformer backbone (the ViTDet pyramid reads its patch grid); "
                f"{type(encoder).__name__} is not one. Use a ViT export, checkpoint or timm ViT name."
            )
        self.config = config or DetectorConfig()
        crop = augment or CropFlipConfig(crop_scale=(0.25, 1.0))
        self.image_size = image_size
        self.augment = DetectionAugment(
            image_size,
            crop_scale=crop.crop_scale,
            crop_ratio=crop.crop_ratio,
            hflip_prob=crop.hflip_prob,
            min_visible=self.config.min_visible,
            min_size=self.config.min_size,
        )
        self.head = build_detection_head(encoder, num_classes, image_size, mean, std, self.config)
        # FineTune registers the encoder; here it is only used (see the module docstring)
        pyramid = self.head.backbone
        del pyramid.encoder
        object.__setattr__(pyramid, "encoder", encoder)
        self.map = DetectionMAP()
        self.class_names: list[str] | None = None
        self._gallery: list[Any] | None = None  # the first validation batch of the epoch
        self.last_gallery: tuple[torch.Tensor, Targets, Targets] | None = None

    # --- training ----------------------------------------------------------------------------------

    @torch.no_grad()
    def train_batch(self, images: torch.Tensor, targets: Targets) -> tuple[torch.Tensor, Targets]:
        """uint8 images on the device and their targets on the host → [0, 1] crops on the device and
        the boxes that survive, moved to the device without waiting for it."""
        if images.ndim != 4 or len(targets) != images.shape[0]:
            raise ValueError(
                f"expected images [B, 3, H, W] and B targets, got {tuple(images.shape)} and {len(targets)} targets."
            )
        params = self.augment.sample(images.shape[0], images.shape[-2], images.shape[-1])
        on_device = BoxCrops(_send(params.crops, images.device), _send(params.flips, images.device))
        out = crop_flip_resize_images(images, on_device, self.augment.size)
        boxes, labels, valid = pad_targets(targets)
        boxes, valid = crop_flip_resize_boxes(
            boxes, valid, params, self.augment.size, self.augment.min_visible, self.augment.min_size
        )
        return out, send_targets(unpad_targets(boxes, labels, valid), images.device)

    def eval_batch(
        self, images: torch.Tensor, targets: Targets, normalize: nn.Module
    ) -> tuple[torch.Tensor, Targets]:
        images = to_unit_float(images)
        if self._gallery is None:  # kept for save_pictures
            self._gallery = [images[:8], targets[:8]]
        return images, send_targets(targets, images.device)

    def forward(self, features: Any, images: torch.Tensor, targets: Targets | None = None) -> Any:
        """[0, 1] images → detections ``[{"boxes", "scores", "labels"}]`` (eval mode) or, in training
        mode with ``targets``, torchvision's loss dict."""
        if self.training:
            if targets is None:
                raise ValueError("the detector computes its loss in training mode: pass the targets.")
            return self.head(images, targets)
        return self.head(images)

    def loss(self, losses: dict[str, torch.Tensor], targets: Targets) -> torch.Tensor:
        return sum(losses.values())

    def train_logs(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"loss_{name}": value for name, value in losses.items()}

    @torch.no_grad()
    def predict_boxes(self, images: torch.Tensor) -> Targets:
        """uint8 (or [0, 1] float) images ``[B, 3, S, S]`` on the model's device → detections in their
        pixels, ``[{"boxes": [N, 4], "scores": [N], "labels": [N]}]``. Call in eval mode."""
        if self.training:
            raise RuntimeError("predict_boxes runs the detector's inference: call model.eval() first.")
        return self.head(to_unit_float(images))

    # --- validation --------------------------------------------------------------------------------

    def update(self, detections: Targets, targets: Targets) -> dict:
        self.map.update(detections, targets)
        if self._gallery is not None and len(self._gallery) == 2:
            self._gallery.append(detections[: len(self._gallery[1])])
        return {}

    def epoch_end(self) -> dict[str, torch.Tensor]:
        """mAP over IoU 0.50:0.95, mAP@50 and mAP@75 of the epoch (``val/map``, ``val/map_50``,
        ``val/map_75``): pycocotools on the accumulated boxes, once per epoch."""
        values = self.map.compute()
        self.map.reset()
        if self._gallery is not None and len(self._gallery) == 3:
            self.last_gallery = tuple(self._gallery)
        self._gallery = None
        return {f"val/{key}": value for key, value in values.items()}

    def save_pictures(self, folder: Path, classes: Sequence[str], title: str) -> list[Path]:
        if self.last_gallery is None:
            return []
        from selfsup.eval.detection import save_detection_grid

        images, targets, detections = self.last_gallery
        images = (images.detach().cpu() * 255).round().to(torch.uint8)
        targets = [{k: v.cpu() for k, v in t.items()} for t in targets]
        detections = [{k: v.cpu() for k, v in d.items()} for d in detections]
        nrow = max(1, math.ceil(math.sqrt(len(images))))
        return [
            save_detection_grid(images, detections, targets, classes, folder / "detections.png", nrow=nrow)
        ]

    # --- record ------------------------------------------------------------------------------------

    def record(self) -> dict:
        record = {**super().record(), "image_size": self.image_size, "detector": plain(self.config)}
        if self.class_names is not None:
            record["classes"] = list(self.class_names)
        return record
