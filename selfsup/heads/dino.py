"""DINO's projection head (Caron et al., 2021, sec. 3.1 and appendix: "a 3-layer MLP with hidden
dimension 2048 followed by l2 normalization and a weight normalized fully connected layer with K
dimensions").

Followed: facebookresearch/dino ``vision_transformer.py`` (``DINOHead``) and ``utils.py``
(``cancel_gradients_last_layer``: the last layer is frozen during the first epoch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """``[N, in_dim]`` → ``[N, out_dim]``: an MLP (``num_layers`` linear layers, GELU between them,
    optional BatchNorm, the last one to ``bottleneck_dim``), L2 normalisation, then a weight-normalised
    linear layer without bias to ``out_dim`` prototypes.

    The last layer is a :class:`WeightNormLinear`: its weight is ``g * v / ||v||`` row by row, with
    parameters ``last_layer.magnitude`` (``g``, ``[out_dim, 1]``) and ``last_layer.direction`` (``v``,
    ``[out_dim, bottleneck_dim]``). ``g`` starts at 1; with ``norm_last_layer`` it stays 1 (not
    trainable), so every prototype has unit norm, which the paper found stabilises training.

    :meth:`last_layer_parameters` returns exactly this head's last-layer parameters, for the method
    to cancel their gradients during the first epoch (DINO's ``freeze_last_layer``). Call it on the
    **student's** head: lightly#1586 froze the teacher's head, which gets no gradients anyway.

    Args:
        in_dim: the encoder's feature size.
        out_dim: ``K``, the number of prototypes (65536 on ImageNet).
        hidden_dim: width of the MLP's hidden layers.
        bottleneck_dim: the MLP's output size, the input of the last layer.
        num_layers: linear layers in the MLP (>= 1; 1 is a single linear layer to ``bottleneck_dim``).
        use_bn: BatchNorm after each hidden linear layer (off for ViTs in DINO).
        norm_last_layer: fix the last layer's weight-norm magnitude ``g`` to 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("out_dim", out_dim),
            ("hidden_dim", hidden_dim),
            ("bottleneck_dim", bottleneck_dim),
            ("num_layers", num_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_linear)
        # the reference initialises the last layer as nn.Linear does, then sets g to 1
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.last_layer.magnitude.requires_grad_(not norm_last_layer)
        self.norm_last_layer = norm_last_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The parameters of this head's weight-normalised last layer, ``[g, v]``: what DINO freezes
        during the first epoch (``g`` is already frozen with ``norm_last_layer``)."""
        return list(self.last_layer.parameters())


class WeightNormLinear(nn.Module):
    """A linear layer without bias whose weight is ``magnitude * direction / ||direction||`` per
    output row (Salimans & Kingma 2016; what DINO's ``nn.utils.weight_norm`` layer computes).

    Written here rather than with ``torch.nn.utils.parametrizations.weight_norm`` because a
    parametrized module cannot be pickled or deep-copied ("only supported through state_dict()"),
    which Lightning's ``ddp_spawn`` launcher and copying a student into its teacher both need; the
    deprecated ``torch.nn.utils.weight_norm`` is on its way out. ``direction`` starts as
    ``nn.Linear``'s weight would, ``magnitude`` at 1 (as the reference sets it)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.direction = nn.Parameter(
            nn.Linear(in_features, out_features, bias=False).weight.detach().clone()
        )
        self.magnitude = nn.Parameter(torch.ones(out_features, 1))

    @property
    def weight(self) -> torch.Tensor:
        return self.magnitude * F.normalize(self.direction, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def _init_linear(module: nn.Module) -> None:
    # the reference's trunc_normal_(std=.02) (cut at +-2, i.e. +-100 std) and zero biases
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
