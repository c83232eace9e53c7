"""MoCo v3's projection and prediction MLPs (Chen, Xie, He, 2021, "An Empirical Study of Training
Self-Supervised Vision Transformers", sec. 3 and appendix: BatchNorm in every layer of the MLPs,
including the output layer, as SimCLR does).

Followed: facebookresearch/moco-v3 ``moco/builder.py`` (``MoCo._build_mlp`` and
``MoCo_ViT._build_projector_and_predictor_mlps``).
"""

from __future__ import annotations

from torch import nn


def build_mlp(
    num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool = True
) -> nn.Sequential:
    """``[N, in_dim]`` → ``[N, out_dim]``: ``num_layers`` linear layers without bias, each hidden one
    followed by BatchNorm and ReLU; with ``last_bn`` the last one is followed by a BatchNorm without
    affine parameters (the reference drops its scale and shift "for simplicity").

    Under DDP the method converts the BatchNorm layers to SyncBatchNorm, as the reference does."""
    for name, value in (
        ("num_layers", num_layers),
        ("in_dim", in_dim),
        ("hidden_dim", hidden_dim),
        ("out_dim", out_dim),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    layers: list[nn.Module] = []
    for index in range(num_layers):
        last = index == num_layers - 1
        d_in = in_dim if index == 0 else hidden_dim
        d_out = out_dim if last else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


def moco_projector(
    in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, num_layers: int = 3
) -> nn.Sequential:
    """The projector on both the base and the momentum encoder: 3 layers for a ViT (4096 → 4096 →
    256), BatchNorm on the output."""
    return build_mlp(num_layers, in_dim, hidden_dim, out_dim, last_bn=True)


def moco_predictor(
    in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256, num_layers: int = 2, last_bn: bool = True
) -> nn.Sequential:
    """The predictor on the base branch only: 2 layers (256 → 4096 → 256). The reference's ViT
    predictor keeps the output BatchNorm (``MoCo_ViT`` calls ``_build_mlp(2, dim, mlp_dim, dim)``
    with the default ``last_bn=True``); its ResNet predictor passes ``last_bn=False``."""
    return build_mlp(num_layers, in_dim, hidden_dim, out_dim, last_bn=last_bn)
