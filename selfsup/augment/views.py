"""``ViewConfig``: everything that defines one augmented view (crop, flip, colour, blur, solarize).

A method declares its views as a list of these (SimCLR: two equal ones; BYOL / MoCo v3: two that
differ in blur and solarize; DINO: two global views and several small local ones), and
:class:`~selfsup.augment.MultiViewAugment` makes them on the device from a uint8 batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Interpolation = Literal["bilinear", "bicubic"]


@dataclass(frozen=True)
class ViewConfig:
    """One view: a random resized crop and flip, colour jitter in a random order, grayscale, Gaussian
    blur and solarisation, each with its own probability, then normalisation.

    The defaults are the colour settings of BYOL, MoCo v3 and DINO (jitter 0.4 / 0.4 / 0.2 / 0.1
    with p = 0.8, grayscale p = 0.2; Grill et al. 2020, table 6) with blur and solarize off, so a
    view is plain crop + flip + colour unless a method asks for more. SimCLR's view comes from
    :meth:`SimCLRViewConfig.to_view`, MAE's and fine-tuning's from :meth:`CropFlipConfig.to_view`.

    Attributes:
        size: side of the square output in pixels; None means the encoder's image size (the method
            fills it in).
        crop_scale: range of the crop's area as a fraction of the input's, drawn uniformly
            (torchvision's ``RandomResizedCrop``; 0.08-1 is Inception's and SimCLR's).
        crop_ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly. Crops
            that do not fit are redrawn up to 10 times, then a central crop is taken, as in
            torchvision.
        hflip_prob: probability of a horizontal flip.
        jitter_prob: probability of colour jitter (all four operations, in a random order per
            sample, as torchvision's ``ColorJitter`` inside ``RandomApply``).
        brightness, contrast, saturation: jitter strengths: factors drawn uniformly from
            ``[max(0, 1 - v), 1 + v]``; 0 turns the operation off.
        hue: hue shift drawn uniformly from ``[-hue, hue]`` (a fraction of the colour circle, at
            most 0.5); 0 turns it off.
        grayscale_prob: probability of converting to grayscale (kept as 3 channels).
        blur_prob: probability of a Gaussian blur.
        blur_sigma: range of the blur's standard deviation in output pixels, drawn uniformly.
        blur_kernel_fraction: the kernel's side as a fraction of ``size`` (SimCLR: 10 %), rounded
            down to an odd number of pixels (23 at 224 px).
        solarize_prob: probability of solarisation (BYOL's second view: 0.2).
        solarize_threshold: pixels at or above this value (in [0, 1]) are inverted.
        interpolation: ``bilinear`` or ``bicubic`` resampling of the crop, antialiased when the
            crop is larger than the output (as torchvision's ``resized_crop(antialias=True)``).
        kornia: further Kornia augmentations for this view, applied to the whole batch on the
            device after the built-in ops and before normalisation, in order, each as
            ``{"class_path": "kornia.augmentation.RandomMotionBlur", "init_args": {...}}`` (in
            YAML: a list of such mappings). For what the built-in engine lacks: elastic,
            perspective or motion-blur transforms for medical or satellite images. They draw from
            torch's global generator, so a seed makes them reproducible.
    """

    size: int | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5
    interpolation: Interpolation = "bilinear"
    kornia: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kornia", tuple(_kornia_entry(entry) for entry in self.kornia))
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):  # YAML gives lists
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"size must be a positive number of pixels or None, got {self.size!r}.")
        for name in ("hflip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {value}.")
        _check_range("crop_scale", self.crop_scale, 0.0, 1.0, "0 < low <= high <= 1")
        _check_range("crop_ratio", self.crop_ratio, 0.0, float("inf"), "0 < low <= high")
        _check_range("blur_sigma", self.blur_sigma, 0.0, float("inf"), "0 < low <= high")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is a jitter strength and must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5] (a fraction of the colour circle), got {self.hue}.")
        if not 0.0 < self.blur_kernel_fraction <= 1.0:
            raise ValueError(f"blur_kernel_fraction must lie in (0, 1], got {self.blur_kernel_fraction}.")
        if not 0.0 <= self.solarize_threshold <= 1.0:
            raise ValueError(f"solarize_threshold must lie in [0, 1], got {self.solarize_threshold}.")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}.")

    @property
    def jitters(self) -> bool:
        """Whether colour jitter can change anything."""
        strengths = (self.brightness, self.contrast, self.saturation, self.hue)
        return self.jitter_prob > 0 and any(v > 0 for v in strengths)

    def blur_kernel(self, size: int) -> int:
        """The blur kernel's side at output side ``size``: odd, ``blur_kernel_fraction`` of it."""
        return int(self.blur_kernel_fraction * size) // 2 * 2 + 1


KORNIA_PREFIX = "kornia.augmentation."


def _kornia_entry(entry: object) -> dict:
    """``{"class_path": "kornia.augmentation.X", "init_args": {...}}``, checked (not imported)."""
    if isinstance(entry, str):
        entry = {"class_path": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("class_path"), str):
        raise ValueError(
            f"each kornia entry is a mapping with a class_path, e.g. {{class_path: {KORNIA_PREFIX}RandomMotionBlur, "
            f"init_args: {{kernel_size: 3, angle: 35.0, direction: 0.5}}}}; got {entry!r}."
        )
    unknown = set(entry) - {"class_path", "init_args"}
    if unknown or not entry["class_path"].startswith(KORNIA_PREFIX):
        raise ValueError(
            f"a kornia entry takes class_path (a class of {KORNIA_PREFIX[:-1]}) and init_args, got {entry!r}."
        )
    return {"class_path": entry["class_path"], "init_args": dict(entry.get("init_args") or {})}


def _check_range(name: str, value: tuple[float, ...], low: float, high: float, rule: str) -> None:
    if len(value) != 2 or not low < value[0] <= value[1] <= high:
        raise ValueError(f"{name} must be a pair with {rule}, got {value}.")


def local_crop_size(image_size: int, patch_size: int, local_size: int | None = None) -> int:
    """The side of multi-crop's small crops (DINO, SwAV, DINOv2): ``local_size`` when given, else
    the papers' 96 px of 224 scaled to ``image_size`` and rounded to a whole number of patches (at
    least one): 224 px → 96, 32 px → 16 with 4-px patches."""
    if local_size:
        return int(local_size)
    return max(patch_size, round(image_size * 96 / 224 / patch_size) * patch_size)
