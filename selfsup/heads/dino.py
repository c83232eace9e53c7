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
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """``[N, in_dim]`` → ``[N, out_dim]``: an MLP (``num_layers`` linear layers, GELU between them,
    optional BatchNorm, the last one to ``bottleneck_dim``), L2 normalisation, then a weight-normalised
    linear layer without bias to ``out_dim`` prototypes.

    The last layer is ``torch.nn.utils.parametrizations.weight_norm`` (the non-deprecated form):
    its weight is ``g * v / ||v||`` row by row, with parameters
    ``last_layer.parametrizations.weight.original0`` (``g``, ``[out_dim, 1]``) and ``...original1``
    (``v``, ``[out_dim, bottleneck_dim]``). ``g`` starts at 1; with ``norm_last_layer`` it stays 1
    (not trainable), so every prototype has unit norm, which the paper found stabilises training.

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
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)
        self.norm_last_layer = norm_last_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The parameters of this head's weight-normalised last layer, ``[g, v]``: what DINO freezes
        during the first epoch (``g`` is already frozen with ``norm_last_layer``)."""
        return list(self.last_layer.parameters())


def _init_linear(module: nn.Module) -> None:
    # the reference's trunc_normal_(std=.02) (cut at +-2, i.e. +-100 std) and zero biases
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
