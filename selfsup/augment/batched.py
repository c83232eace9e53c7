"""The batched view op: uint8 images → normalised views, with per-sample random parameters, in a
fixed number of batched operations, with no Python loop over samples and no host-device sync.

    params = sample_view_params(B, (H, W), config)          # every draw, at once, on the CPU
    view = apply_view(images, params, config, mean, std)    # a fixed sequence of batched ops

What ``apply_view`` runs, in order (SimCLR / BYOL / DINO's order of operations):

1. crop + resize + flip: one ``grid_sample`` or two batched matmuls (``selfsup.augment.resample``);
2. colour jitter with per-sample factors *and per-sample order*: three linear rounds (one
   ``bmm`` + offset + clamp each) and a hue shift applied to four host-planned groups of samples
   (``selfsup.augment.color``);
3. grayscale, folded into the normalisation matrix when nothing non-linear follows it (blur is
   linear and channel-wise, so it commutes with grayscale exactly);
4. Gaussian blur with per-sample sigma on the host-planned group of blurred samples, as one
   grouped separable convolution (``selfsup.augment.blur``);
5. solarize, one ``where`` with a per-sample threshold;
6. normalisation: one ``bmm`` with a per-sample 3x3 matrix and an offset, cast to ``out_dtype``.

Everything that depends on the random draws (grids, matrices, kernels, which samples form each
group) is computed on the host from the CPU-drawn :class:`ViewParams` and copied to the device in
two non-blocking copies; the device never waits and the host never reads device memory. Which ops
run depends only on the :class:`ViewConfig`, so the number of kernels is the same for every batch
size and every draw (a group may be empty; the blur group has at least one, unblurred, sample).

Why not Kornia's ``augmentation`` modules: ``RandomResizedCrop`` crops in a Python loop over the
samples, its random generators live on the model's device (every parameter read blocks), and
``ColorJitter`` reads ``order.tolist()`` and several ``.any()`` per call; about 25 syncs per SimCLR
step. Kornia's reference checks and functional ops remain fine for tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment.blur import blur, gaussian_kernels
from selfsup.augment.color import GRAY_WEIGHTS, adjust_hue_, linear_round, round_matrices
from selfsup.augment.params import HUE, ViewParams, sample_view_params
from selfsup.augment.resample import matrix_resample, needs_matrices, sample_coordinates
from selfsup.augment.views import ViewConfig


def apply_view(
    images: torch.Tensor,
    params: ViewParams,
    config: ViewConfig,
    mean: Sequence[float],
    std: Sequence[float],
    out_dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``[B, 3, H, W]`` uint8 (or float in [0, 1]) images on any device → ``[B, 3, S, S]`` views
    normalised with ``mean`` / ``std`` (in [0, 1] units), in ``out_dtype``.

    ``params`` come from :func:`sample_view_params` (on the CPU, or moved with ``.to``): planning
    uses their host copy, so the call never reads device memory. ``compute_dtype`` is the dtype of
    the colour, blur and normalisation steps (float32; float16 halves their memory traffic on a
    GPU at about 1/1000 of the range in precision); the crop is always resampled in float32.
    """
    x, bound = as_float(images)
    extra = kornia_ops(config)  # built per call here; MultiViewAugment builds them once
    extra = extra.to(x.device) if extra is not None else None
    return _apply(x, bound, params, config, _norm(mean, std), out_dtype, compute_dtype, extra)


def as_float(images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(float32 images, bound)``: uint8 stays in 0..255 (``bound`` 255, no division), float input
    is taken as [0, 1] (``bound`` 1)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}.")
    if images.dtype == torch.uint8:
        return images.float(), 255.0
    if images.is_floating_point():
        return images.float(), 1.0
    raise TypeError(f"expected uint8 or float images, got {images.dtype}.")


def kornia_ops(config: ViewConfig) -> nn.Module | None:
    """The view's extra Kornia augmentations (``ViewConfig.kornia``) as one module, or None. Kornia
    is imported only here, and only for a view that asks for it."""
    if not config.kornia:
        return None
    import kornia.augmentation

    ops = []
    for entry in config.kornia:
        name = entry["class_path"].rsplit(".", 1)[1]
        cls = getattr(kornia.augmentation, name, None)
        if not isinstance(cls, type) or not issubclass(cls, nn.Module):
            import difflib

            known = [n for n in dir(kornia.augmentation) if n.startswith("Random")]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"kornia.augmentation has no augmentation '{name}'.{hint}")
        try:
            ops.append(cls(**entry["init_args"]))
        except TypeError as err:
            raise ValueError(f"{entry['class_path']}: {err}") from None
    return nn.Sequential(*ops)


def _norm(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ValueError(f"mean and std need 3 values (one per channel) and std > 0, got {mean} and {std}.")
    return mean, std


def _apply(
    x: torch.Tensor,
    bound: float,
    params: ViewParams,
    config: ViewConfig,
    norm: tuple[tuple[float, ...], tuple[float, ...]],
    out_dtype: torch.dtype,
    compute_dtype: torch.dtype,
    extra: nn.Module | None = None,
) -> torch.Tensor:
    b, _, height, width = x.shape
    if params.batch_size != b or tuple(params.in_hw) != (height, width):
        raise ValueError(
            f"the parameters were drawn for {params.batch_size} images of {params.in_hw}, but the batch "
            f"has {b} images of {(height, width)}: draw them with sample_view_params(B, (H, W), config)."
        )
    if config.size is None and height != width:
        raise ValueError(f"ViewConfig.size is None (the input's side) but the input is {height}x{width}.")
    size = config.size or height
    plan = _plan(params, config, size, bound, norm, x.device)

    # 1. crop + resize + flip (float32)
    if needs_matrices((height, width), size, config.interpolation):
        v = matrix_resample(x, plan["boxes"], plan["flip"] > 0, size, config.interpolation)
        if config.interpolation == "bicubic":
            v.clamp_(0, bound)  # cubic overshoot, as torchvision's clamp for uint8
    else:
        grid = torch.stack(
            [plan["gx"][:, None, :].expand(-1, size, -1), plan["gy"][:, :, None].expand(-1, -1, size)], dim=-1
        )
        v = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    v = v.to(compute_dtype)
    spare = torch.empty_like(v)  # the other buffer of the linear steps: few large allocations

    # 2. colour jitter: hue group r, then linear round r
    if config.jitters:
        matrix, means = plan["matrix"].to(compute_dtype), plan["means"].to(compute_dtype)
        start = 0
        for r in range(4):
            if config.hue > 0:
                stop = start + params.hue_counts[r]
                index = plan["hue_index"][start:stop]
                v.index_copy_(0, index, adjust_hue_(v[index], plan["hue_shift"][start:stop]))
                start = stop
            if r < 3:
                v, spare = linear_round(v, matrix[r], means[r], bound, out=spare), v

    # 3. grayscale, explicitly only where solarize (not linear) follows
    if config.grayscale_prob > 0 and config.solarize_prob > 0:
        gray = plan["gray"].to(compute_dtype)
        v, spare = torch.bmm(gray, v.view(b, 3, -1), out=spare.view(b, 3, -1)).view_as(v), v

    # 4. blur, on the group of blurred samples
    if config.blur_prob > 0:
        index = plan["blur_index"]
        v.index_copy_(0, index, blur(v[index], plan["blur_kernels"]))

    # 5. solarize: per-sample threshold, +inf where not drawn
    if config.solarize_prob > 0:
        torch.where(v >= plan["solarize"].to(compute_dtype)[:, None, None, None], bound - v, v, out=v)

    # 5b. the view's Kornia augmentations (ViewConfig.kornia), on [0, 1] images
    if extra is not None:
        v = (extra(v.float() / bound) * bound).to(compute_dtype).contiguous()
        spare = torch.empty_like(v)

    # 6. normalise (and grayscale, when folded): one matrix per sample and an offset
    out = torch.bmm(plan["final"].to(compute_dtype), v.view(b, 3, -1), out=spare.view(b, 3, -1))
    out.add_(plan["offset"].to(compute_dtype))
    return out.view(b, 3, size, size).to(out_dtype)


def _plan(
    params: ViewParams,
    config: ViewConfig,
    size: int,
    bound: float,
    norm: tuple[tuple[float, ...], tuple[float, ...]],
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Everything ``apply_view`` needs from the draws, computed where the parameters' host copy
    lives (the CPU) and moved to ``device`` in at most two non-blocking copies."""
    p = params.host if params.host is not None else params
    b = p.batch_size
    plan: dict[str, torch.Tensor] = {}
    height, width = p.in_hw
    if needs_matrices((height, width), size, config.interpolation):
        plan["boxes"] = p.boxes.float()
        plan["flip"] = p.flip.float()
    else:
        x, y = sample_coordinates(p.boxes, p.flip, size)
        # normalised coordinates for align_corners=False: pixel i spans [-1 + 2i/W, -1 + 2(i+1)/W]
        plan["gx"] = ((2 * x + 1) / width - 1).float()
        plan["gy"] = ((2 * y + 1) / height - 1).float()
    if config.jitters:
        plan["matrix"], plan["means"] = round_matrices(p.order, p.factors, p.jitter)
        if config.hue > 0:
            position = (p.order == HUE).int().argmax(1)
            key = torch.where(p.jitter, position, 4)  # not jittered: after the four groups, unused
            order = torch.sort(key, stable=True).indices
            plan["hue_index"] = order
            plan["hue_shift"] = p.factors[order, 3]
    eye = torch.eye(3, device=p.device).expand(b, 3, 3)
    gray = torch.tensor(GRAY_WEIGHTS, device=p.device).expand(b, 3, 3)
    to_gray = torch.where(p.grayscale[:, None, None], gray, eye)
    if config.grayscale_prob > 0 and config.solarize_prob > 0:
        plan["gray"] = to_gray
        to_gray = eye
    if config.blur_prob > 0:
        blurred = torch.sort((~p.blur).int(), stable=True).indices[: max(1, p.blur_count)]
        plan["blur_index"] = blurred
        plan["blur_kernels"] = gaussian_kernels(p.sigma[blurred], config.blur_kernel(size), p.blur[blurred])
    if config.solarize_prob > 0:
        threshold = torch.full((b,), config.solarize_threshold * bound, device=p.device)
        plan["solarize"] = torch.where(p.solarize, threshold, float("inf"))
    mean, std = norm
    scale = torch.tensor([1 / (bound * s) for s in std], device=p.device)
    plan["final"] = scale[None, :, None] * to_gray  # diag(1 / (bound std)) @ G
    plan["offset"] = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=p.device).expand(
        b, 3
    )[..., None]
    return _move(plan, device)


def _move(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors on ``device``: one packed buffer per dtype, pinned and copied without blocking
    when going to a GPU, then split back into views (no kernels)."""
    if all(t.device == device for t in tensors.values()):
        return tensors
    out: dict[str, torch.Tensor] = {}
    for dtype in {t.dtype for t in tensors.values()}:
        names = [n for n, t in tensors.items() if t.dtype == dtype]
        flat = torch.cat([tensors[n].reshape(-1) for n in names])
        pin = device.type == "cuda" and flat.device.type == "cpu"
        flat = (flat.pin_memory() if pin else flat).to(device, non_blocking=True)
        for name, chunk in zip(names, flat.split([tensors[n].numel() for n in names]), strict=True):
            out[name] = chunk.view(tensors[name].shape)
    return out


class MultiViewAugment(nn.Module):
    """Any number of views of one uint8 batch, each from its own :class:`ViewConfig` (sizes may
    differ: DINO's 2 x 224-px global and 8 x 96-px local crops), on whatever device the batch is on.

    Each view draws its own parameters (so two views of one image differ, and every sample in the
    batch gets its own), from torch's global CPU generator unless one is given, so
    ``lightning.seed_everything`` makes the views reproducible. The uint8 → float conversion of the
    batch is done once and shared by the views.

    Args:
        views: one config per view; a view whose ``size`` is None gets the input's side.
        mean, std: per-channel normalisation in [0, 1] units (the encoder's ``pretrained_cfg``).
        out_dtype: dtype of the returned views (bf16 under bf16-mixed halves what the encoder reads).
        compute_dtype: dtype of the colour, blur and normalisation steps (see :func:`apply_view`).
    """

    def __init__(
        self,
        views: Sequence[ViewConfig],
        mean: Sequence[float],
        std: Sequence[float],
        out_dtype: torch.dtype = torch.float32,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if not views:
            raise ValueError("views must name at least one ViewConfig.")
        for view in views:
            if not isinstance(view, ViewConfig):
                raise TypeError(f"views must be ViewConfig instances, got {type(view).__name__}.")
        self.views = list(views)
        # a view's Kornia augmentations, built once (modules: they follow the augmenter's device)
        self.extra = nn.ModuleList([kornia_ops(view) or nn.Identity() for view in self.views])
        self.norm = _norm(mean, std)
        self.out_dtype = out_dtype
        self.compute_dtype = compute_dtype

    @torch.no_grad()
    def forward(self, images: torch.Tensor, out_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
        """``[B, 3, H, W]`` uint8 → one ``[B, 3, S_v, S_v]`` normalised view per config, in order."""
        return self.forward_with_params(images, out_dtype=out_dtype)[0]

    @torch.no_grad()
    def forward_with_params(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        out_dtype: torch.dtype | None = None,
    ) -> tuple[list[torch.Tensor], list[ViewParams]]:
        """The views and the (CPU) parameters each was made with: crop boxes in input pixels, flips,
        jitter factors and order, etc. (for previews and tests)."""
        x, bound = as_float(images)
        in_hw = (x.shape[-2], x.shape[-1])
        outputs, drawn = [], []
        for view, extra in zip(self.views, self.extra, strict=True):
            params = sample_view_params(x.shape[0], in_hw, view, generator)
            extra = None if isinstance(extra, nn.Identity) else extra
            dtype = out_dtype or self.out_dtype
            outputs.append(_apply(x, bound, params, view, self.norm, dtype, self.compute_dtype, extra))
            drawn.append(params)
        return outputs, drawn

    def extra_repr(self) -> str:
        sizes = [v.size for v in self.views]
        return f"views={len(self.views)}, sizes={sizes}, out_dtype={self.out_dtype}"
