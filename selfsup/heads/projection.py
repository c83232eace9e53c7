"""SimCLR's projection MLP."""

from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """``[N, in_dim]`` → ``[N, out_dim]``: ``num_layers`` linear layers, BatchNorm + ReLU between
    them (SimCLR v2's head; ``batch_norm=False`` gives SimCLR v1's). Under DDP the BatchNorm layers
    are converted to SyncBatchNorm by the method (``sync_batchnorm``)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        super().__init__(*layers)
