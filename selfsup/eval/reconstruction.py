"""What MAE sees and what it paints back, as a PNG grid: people look at these rather than read losses."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from selfsup.distributed import gathering_forward
from selfsup.encoders import unpatchify
from selfsup.eval.image_grid import ImageGrid, Picture, to_pixels


@torch.no_grad()
def reconstruction_grid(
    module, images: torch.Tensor, seed: int = 0, min_side: int = 96, forward=None
) -> torch.Tensor:
    """Three rows for a uint8 batch ``[N, 3, H, W]``: the original, the masked input (hidden patches
    grey), and the reconstruction with the visible patches pasted back. Returns a float ``[3, h, w]``
    grid in [0, 1]; images smaller than ``min_side`` are enlarged (nearest) to stay legible.
    ``forward`` runs the model (default: ``module``; under FSDP the wrapped root, which gathers the
    sharded weights)."""
    was_training = module.training
    module.eval()
    try:
        device = next(module.parameters()).device
        x = module.normalize(images.to(device))
        generator = torch.Generator(device=device).manual_seed(seed)
        pred, target, mask = (forward or module)(x, generator=generator)
        if (
            module.criterion.norm_pix_loss
        ):  # predictions are per-patch normalised: undo with the target's stats
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + module.criterion.eps).sqrt()
            pred = pred * std + mean
        keep = (1 - mask).unsqueeze(-1)
        p, c, (h, w) = module.patch_size, module.in_chans, x.shape[-2:]
        masked = unpatchify(target * keep, p, c, h, w)  # hidden patches → 0 = the data mean: grey
        pasted = unpatchify(target * keep + pred * (1 - keep), p, c, h, w)
        rows = torch.cat([x, masked, pasted])
        mean_t = torch.tensor(module.mean, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(module.std, device=device).view(1, -1, 1, 1)
        rows = (rows.float() * std_t + mean_t).clamp(0, 1)
        if h < min_side:
            factor = -(-min_side // h)
            rows = F.interpolate(rows, scale_factor=factor, mode="nearest")
        return make_grid(rows.cpu(), nrow=len(images), padding=2, pad_value=1.0)
    finally:
        module.train(was_training)


class ReconstructionGrid(ImageGrid):
    """Every ``every_n_epochs`` (and after the last epoch), save the reconstruction grid of a fixed
    set of held-out images as ``<run dir>/reconstructions/epoch_<NNN>.png`` and send it to the active
    logger (TensorBoard ``add_image``, W&B ``log_image``). The same images and the same masks every
    time, so the PNGs show training progress.

    Args:
        every_n_epochs: how often.
        num_images: images per grid (columns).
        seed: seed of the masks.
    """

    def __init__(self, every_n_epochs: int = 1, num_images: int = 8, seed: int = 0) -> None:
        super().__init__(every_n_epochs, num_images)
        self.seed = seed

    def applies(self, pl_module: L.LightningModule) -> str | None:
        if not hasattr(pl_module, "decoder") or not hasattr(pl_module, "patch_size"):
            return "only applies to MAE"
        return None

    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule, images: torch.Tensor) -> torch.Tensor:
        # through the strategy's wrapper: under FSDP the parameters are sharded and the wrapper
        # gathers them (every process runs this forward)
        forward = gathering_forward(trainer.strategy.model)
        return reconstruction_grid(pl_module, images, seed=self.seed, forward=forward)

    def render(self, computed: torch.Tensor, images: torch.Tensor, epoch: int) -> list[Picture]:
        return [Picture(f"reconstructions/epoch_{epoch:03d}.png", "mae/reconstruction", to_pixels(computed))]
