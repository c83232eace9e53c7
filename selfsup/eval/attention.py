"""The last block's class-token attention, per head, drawn over the image: DINO's figure (Caron et
al., 2021, fig. 1 and 3), for any selfsup ViT (DINO, MoCo v3, SimCLR, MAE).

Followed: facebookresearch/dino ``visualize_attention.py`` (the class token's attention over the
patches of the last block, per head, upsampled to the image with nearest neighbours, and the
threshold that keeps the most-attended patches holding a given share of the attention mass) and
``vision_transformer.py`` (``get_last_selfattention``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch import nn

DPI = 100
UNREADABLE_FIX = "Leave it out of the images given, or replace the file with one that opens."
MIN_PANEL = 128  # panels of small images are enlarged (by a whole factor) to at least this many pixels


# --- attention ---------------------------------------------------------------------------------------


def class_token_attention(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Normalised images ``[B, 3, H, W]`` → the last block's attention of the class token over the
    patch tokens, per head: ``[B, heads, h, w]`` on the patch grid (``h = H // patch``; register
    tokens and the class token itself are left out, so a row sums to at most 1).

    timm's ``Attention`` runs fused SDPA, which never forms the attention matrix, so the class
    token's row ``softmax(q_cls k^T / sqrt(d))`` is recomputed from the last block's ``qkv`` (and its
    q/k norms) on the block's normalised input. That input is taken by a forward hook on
    ``blocks[-1].norm1`` during timm's public ``forward_features``, and the row is computed inside
    the hook, i.e. inside the block's forward: where FSDP has gathered the block's parameters.

    The encoder runs in eval mode (no dropout, no drop path) and is put back as it was. Works with
    ``dynamic_img_size`` (any image size that is a multiple of the patch size) and non-square images.

    Raises:
        ValueError: the encoder is not a timm ViT with a class token and timm's standard attention,
            or the images do not fit it.
    """
    block = _last_block(encoder)
    attn = block.attn
    if images.ndim != 4:
        raise ValueError(f"images must be a [B, C, H, W] batch, got shape {tuple(images.shape)}.")
    grid = _patch_grid(encoder, images.shape[-2:])
    prefix = int(encoder.num_prefix_tokens)
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple, x: torch.Tensor) -> None:
        b, n, _ = x.shape
        qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim)
        q = attn.q_norm(qkv[:, :1, 0].transpose(1, 2))  # [B, heads, 1, d]: the class token's query
        k = attn.k_norm(qkv[:, :, 1].transpose(1, 2))  # [B, heads, N, d]
        scores = (q.float() * attn.scale) @ k.float().transpose(-2, -1)  # [B, heads, 1, N]
        captured.append(scores.softmax(dim=-1)[:, :, 0, prefix:])

    was_training = encoder.training
    encoder.eval()
    handle = block.norm1.register_forward_hook(hook)
    try:
        with torch.no_grad():
            encoder.forward_features(images.to(_param_dtype(encoder)))
    finally:
        handle.remove()
        encoder.train(was_training)
    attention = captured[-1]
    if attention.shape[-1] != grid[0] * grid[1]:
        raise ValueError(
            f"the last block sees {attention.shape[-1]} patch tokens but the patch grid of "
            f"{tuple(images.shape[-2:])}-px images is {grid[0]}x{grid[1]}."
        )
    return attention.reshape(*attention.shape[:2], *grid)


def mass_threshold(attention: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """``[..., h, w]`` attention → a bool mask of the same shape keeping, in each map, the
    most-attended patches whose attention adds up to ``mass`` of the map's total (DINO's
    ``--threshold``: sort ascending, keep where the normalised cumulative sum exceeds ``1 - mass``)."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must lie in (0, 1] (DINO shows 0.6), got {mass!r}.")
    flat = attention.flatten(-2)
    values, order = flat.sort(dim=-1)
    cumulative = (values / values.sum(dim=-1, keepdim=True)).cumsum(dim=-1)
    keep_sorted = cumulative > 1.0 - mass
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return keep.view_as(attention)


# --- figures -----------------------------------------------------------------------------------------


def attention_figure(
    image: torch.Tensor,
    attention: torch.Tensor,
    threshold: float | None = None,
    panel_size: int | None = None,
) -> np.ndarray:
    """One row of panels: the image, then one per head. A head's panel is its attention map
    (upsampled to the image with nearest neighbours, colour-mapped); with ``threshold`` it is the
    image with the patches outside the head's ``threshold`` attention mass dimmed.

    Args:
        image: ``[3, H, W]`` uint8.
        attention: ``[heads, h, w]`` (see :func:`class_token_attention`).
        threshold: share of the attention mass to keep, e.g. 0.6 (DINO's figure), or None.
        panel_size: panel width in pixels (default: the image width times the smallest whole factor
            reaching 128 px). The height follows the image's aspect ratio.

    Returns:
        The rendered figure, ``[panel_h, (1 + heads) * panel_size, 4]`` uint8 RGBA.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if image.ndim != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be a [3, H, W] uint8 tensor, got {image.dtype} {tuple(image.shape)}.")
    if attention.ndim != 3:
        raise ValueError(f"attention must be [heads, h, w], got shape {tuple(attention.shape)}.")
    if panel_size is not None and panel_size < 1:
        raise ValueError(f"panel_size must be >= 1 pixel (or None for the default), got {panel_size!r}.")
    height, width = image.shape[-2:]
    panel_w = panel_size if panel_size is not None else width * math.ceil(MIN_PANEL / width)
    panel_h = max(1, round(panel_w * height / width))
    heads = attention.shape[0]
    columns = 1 + heads
    maps = F.interpolate(attention[None].float().cpu(), size=(height, width), mode="nearest")[0]
    picture = image.permute(1, 2, 0).cpu().numpy()

    figure = Figure(dpi=DPI)
    # + 1e-3 px: the canvas truncates width_inches * dpi to an int, and e.g. 0.29 * 100 < 29 in floats
    figure.set_size_inches((columns * panel_w + 1e-3) / DPI, (panel_h + 1e-3) / DPI)
    canvas = FigureCanvasAgg(figure)
    panels = [picture, *range(heads)]
    if threshold is not None:
        masks = F.interpolate(
            mass_threshold(attention[None].float().cpu(), threshold).float(),
            size=(height, width),
            mode="nearest",
        )[0]
    for column, panel in enumerate(panels):
        axes = figure.add_axes((column / columns, 0.0, 1.0 / columns, 1.0))
        axes.set_axis_off()
        if column == 0:
            axes.imshow(panel, interpolation="nearest", aspect="auto")
            continue
        if threshold is None:
            axes.imshow(maps[panel].numpy(), cmap="inferno", interpolation="nearest", aspect="auto")
        else:
            dimmed = picture * (0.25 + 0.75 * masks[panel].numpy()[..., None])
            axes.imshow(dimmed.astype(np.uint8), interpolation="nearest", aspect="auto")
        axes.text(0.03, 0.97, f"head {panel}", transform=axes.transAxes, color="white", fontsize=7, va="top")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def write_attention_maps(
    encoder: nn.Module,
    images: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    out_dir: str | Path,
    names: Sequence[str],
    threshold: float | None = None,
    panel_size: int | None = None,
    batch_size: int = 32,
) -> tuple[list[Path], list[np.ndarray]]:
    """uint8 images ``[B, 3, H, W]`` → ``out_dir/<name>.png`` each (see :func:`attention_figure`);
    returns the paths and the rendered RGBA arrays. ``normalize`` maps uint8 images to the
    encoder's normalised input (``selfsup.augment.normalize.Normalize``)."""
    if len(names) != len(images):
        raise ValueError(f"{len(images)} images but {len(names)} names.")
    device = next(encoder.parameters()).device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, figures = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        attention = class_token_attention(encoder, normalize(chunk.to(device))).cpu()
        for image, maps, name in zip(chunk, attention, names[start : start + batch_size], strict=True):
            rgba = attention_figure(image, maps, threshold, panel_size)
            path = out_dir / f"{name}.png"
            Image.fromarray(rgba).save(path)
            paths.append(path)
            figures.append(rgba)
    return paths, figures


def save_attention_maps(
    encoder: nn.Module,
    image_paths: Sequence[str | Path],
    out_dir: str | Path,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    threshold: float | None = None,
    panel_size: int | None = None,
) -> list[Path]:
    """For each image file, ``out_dir/<NNN>_<stem>.png``: the image (resized on its shorter side to
    ``image_size`` and centre-cropped) and the last block's class-token attention of each head.

    Args:
        encoder: a timm ViT taking ``image_size`` images (or built with ``dynamic_img_size``).
        mean, std: the encoder's normalisation (its ``pretrained_cfg``), per channel in 0..1.
        threshold, panel_size: see :func:`attention_figure`.
    """
    from selfsup.augment.normalize import Normalize
    from selfsup.data import load_image
    from selfsup.data.images import ImageDecodeError

    if not image_paths:
        raise ValueError("no images given: pass one or more image files.")
    loaded, unreadable = [], []
    for path in image_paths:
        try:
            loaded.append(load_image(path, image_size))
        except ImageDecodeError as err:
            unreadable.append(err)
    if unreadable:  # all of them named at once, before anything is written
        first, others = unreadable[0], unreadable[1:]
        more = (
            f" {len(others)} more cannot be read either: {', '.join(e.path for e in others)}."
            if others
            else ""
        )
        raise ImageDecodeError(first.path, first.reason, fix=f"{UNREADABLE_FIX}{more}") from None
    images = torch.stack(loaded)
    names = [f"{i:03d}_{Path(path).stem}" for i, path in enumerate(image_paths)]
    device = next(encoder.parameters()).device
    normalize = Normalize(mean, std).to(device)
    paths, _ = write_attention_maps(encoder, images, normalize, out_dir, names, threshold, panel_size)
    return paths


# --- command -----------------------------------------------------------------------------------------


def attention_parser():
    from selfsup.arguments import CommandParser

    parser = CommandParser(
        "attention",
        description=(
            "For each image, a PNG of the image and the class-token attention of each head of the "
            "last block (DINO's figure)."
        ),
    )
    parser.add_argument("model", help="a selfsup checkpoint (.ckpt) or an export folder")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", type=str, required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument(
        "--image_size", type=int | None, default=None, help="image side in pixels (default: the model's)"
    )
    parser.add_argument(
        "--threshold",
        type=float | None,
        default=None,
        help="show the patches holding this share of each head's attention (DINO: 0.6) instead of the map",
    )
    parser.add_argument("--panel_size", type=int | None, default=None, help="panel width in pixels")
    parser.add_argument("--device", type=str, default="auto", help="cpu, cuda, ... (auto: cuda if available)")
    return parser


def attention_command(argv: Sequence[str]) -> list[Path]:
    """``selfsup attention CKPT_OR_EXPORT IMAGE... --out DIR [--image_size N] [--threshold 0.6]``."""
    from selfsup.export import load_encoder

    args = attention_parser().parse_args(list(argv))
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {', '.join(missing)}.")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_encoder(args.model).to(device)
    _last_block(encoder)
    native = int(encoder.patch_embed.img_size[0])
    image_size = args.image_size or native
    patch = int(encoder.patch_embed.patch_size[0])
    if image_size % patch:
        raise ValueError(
            f"--image_size {image_size} is not a multiple of the model's {patch}-px patches: use e.g. "
            f"{max(patch, image_size // patch * patch)}."
        )
    if image_size != native and not getattr(encoder, "dynamic_img_size", False):
        encoder.set_input_size(img_size=image_size)  # timm: resamples the position embedding
    cfg = encoder.pretrained_cfg
    paths = save_attention_maps(
        encoder, args.images, args.out, cfg["mean"], cfg["std"], image_size, args.threshold, args.panel_size
    )
    shown = ", ".join(p.name for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    what = f"the patches holding {args.threshold:.0%} of the" if args.threshold is not None else "the"
    print(
        f"wrote {len(paths)} PNG{'s' if len(paths) > 1 else ''} to {args.out} ({shown}): each image at "
        f"{image_size} px and {what} class-token attention of each of the "
        f"{_last_block(encoder).attn.num_heads} heads of the last block"
    )
    return paths


# --- callback ----------------------------------------------------------------------------------------


class AttentionMaps(Callback):
    """Every ``every_n_epochs`` (and after the last epoch), write the attention maps of a fixed set
    of held-out images as ``<log dir>/attention/epoch_<NNN>/<i>.png`` and send them to the active
    loggers (TensorBoard ``add_image``, W&B ``log_image``). Same images every time, so the PNGs show
    training progress.

    The encoder is the method's ``backbone`` (the teacher for DINO and MoCo v3) or its ``encoder``,
    and ``pl_module.normalize`` normalises the images: any selfsup method with a ViT encoder.

    Distributed runs: every process runs the forward (under FSDP a forward on one process alone
    would wait forever for the others; the attention row is computed inside the last block's
    forward, where its parameters are gathered); only the first process renders and writes.

    Args:
        every_n_epochs: how often.
        num_images: how many held-out images (the first of the validation split, else of the
            training split).
        threshold: see :func:`attention_figure` (None: the attention maps themselves).
        panel_size: see :func:`attention_figure`.
    """

    def __init__(
        self,
        every_n_epochs: int = 10,
        num_images: int = 4,
        threshold: float | None = None,
        panel_size: int | None = None,
    ) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError(
                f"every_n_epochs and num_images must be >= 1, got {every_n_epochs} and {num_images}."
            )
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1] (DINO shows 0.6) or be None, got {threshold!r}.")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.threshold = threshold
        self.panel_size = panel_size
        self.images: torch.Tensor | None = None
        self.paths: list[Path] = []

    def _fixed_images(self, trainer: L.Trainer) -> torch.Tensor:
        if self.images is None:
            datamodule = trainer.datamodule
            loader = None
            if datamodule is not None and hasattr(datamodule, "eval_dataloader"):
                try:
                    loader = datamodule.eval_dataloader("val", batch_size=self.num_images)
                except ValueError:
                    loader = datamodule.eval_dataloader("train", batch_size=self.num_images)
            images, _ = next(iter(loader if loader is not None else trainer.train_dataloader))
            if isinstance(images, (list, tuple)):
                raise ValueError(
                    "AttentionMaps needs decoded uint8 image batches; with data.decode: gpu give it a "
                    "data module with an eval_dataloader."
                )
            self.images = images[: self.num_images].clone()
        return self.images

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        encoder = getattr(pl_module, "backbone", None)
        if encoder is None:
            encoder = getattr(pl_module, "encoder", None)
        if encoder is None or not hasattr(encoder, "blocks"):
            rank_zero_warn("AttentionMaps needs a method with a ViT encoder; skipping it for this model.")
            return
        images = self._fixed_images(trainer)
        attention = class_token_attention(encoder, pl_module.normalize(images.to(pl_module.device)))
        # trainer.log_dir broadcasts from rank 0: every process must ask for it
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "attention" / f"epoch_{epoch:03d}"
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for index, (image, maps) in enumerate(zip(images, attention.cpu(), strict=True)):
            rgba = attention_figure(image, maps, self.threshold, self.panel_size)
            path = folder / f"{index}.png"
            Image.fromarray(rgba).save(path)
            self.paths.append(path)
            rgb = rgba[..., :3]
            for logger in trainer.loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_image"):  # TensorBoard
                    experiment.add_image(
                        f"attention/{index}", rgb, global_step=trainer.global_step, dataformats="HWC"
                    )
                elif hasattr(logger, "log_image"):  # Weights & Biases
                    logger.log_image(key=f"attention/{index}", images=[rgb], step=trainer.global_step)


# --- checks ------------------------------------------------------------------------------------------


def _last_block(encoder: nn.Module) -> nn.Module:
    blocks = getattr(encoder, "blocks", None)
    if blocks is None or len(blocks) == 0 or not hasattr(encoder, "patch_embed"):
        raise ValueError(
            f"attention maps need a timm VisionTransformer (with blocks and a patch_embed), got {type(encoder).__name__}."
        )
    if getattr(encoder, "cls_token", None) is None:
        raise ValueError(
            "attention maps show the class token's attention, but this ViT has no class token "
            "(class_token=False): train it with a class token to use them."
        )
    block = blocks[-1]
    attn = getattr(block, "attn", None)
    if not hasattr(block, "norm1") or not all(
        hasattr(attn, a) for a in ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm")
    ):
        raise ValueError(
            f"the last block's attention is a {type(attn).__name__}, not timm's standard Attention "
            "(qkv, q/k norms): attention maps support timm's vit_* / deit_* models."
        )
    return block


def _patch_grid(encoder: nn.Module, size: Sequence[int]) -> tuple[int, int]:
    patch_embed = encoder.patch_embed
    height, width = int(size[0]), int(size[1])
    if getattr(encoder, "dynamic_img_size", False):
        grid = patch_embed.dynamic_feat_size((height, width))
        return int(grid[0]), int(grid[1])
    expected = tuple(int(s) for s in patch_embed.img_size)
    if (height, width) != expected:
        raise ValueError(
            f"images are {height}x{width} px but the encoder takes {expected[0]}x{expected[1]}: resize "
            "them, or build the encoder with dynamic_img_size=True (or call its set_input_size)."
        )
    return int(patch_embed.grid_size[0]), int(patch_embed.grid_size[1])


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype
