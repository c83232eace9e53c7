"""Linear probe of frozen features.

Recipe (on features extracted once, so it takes seconds): features are standardised with the
training set's per-dimension mean and standard deviation (a BatchNorm without affine parameters,
as in MAE's linear probe), then a linear layer is trained with cross entropy, SGD with momentum 0.9,
learning rate 0.1 at batch 1024 with a cosine decay to 0 over 100 epochs, no weight decay. The
score is top-1 and top-5 accuracy on the held-out features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.eval.progress import progress


@dataclass
class LinearProbe:
    """A trained probe: ``logits = linear((x - mean) / std)``."""

    linear: nn.Linear
    mean: torch.Tensor
    std: torch.Tensor

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.to(self.mean.device).float() - self.mean) / self.std
        return self.linear(x)


def train_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 1024,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    description: str | None = None,
) -> LinearProbe:
    """Fit the probe on ``[N, D]`` features and ``[N]`` labels (rows with label < 0 are skipped).
    With ``description``, a progress bar counts the epochs and the time spent is printed at the end."""
    keep = labels >= 0
    x = features[keep].float().to(device)
    y = labels[keep].long().to(device)
    if len(x) == 0:
        raise ValueError("the linear probe needs labelled training features; none have a label >= 0.")
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(mean)
    x = (x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(x.shape[1], num_classes).to(device)
    nn.init.normal_(linear.weight, std=0.01, generator=generator)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.SGD(linear.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(x) // batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    with progress(description, epochs, "epochs") as advance:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator).to(device)
            for start in range(0, len(x), batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(linear(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            advance(1)
    return LinearProbe(linear.eval(), mean, std)


def topk_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[int, float]:
    """Top-k accuracies (0..1) over the samples with a label >= 0."""
    keep = labels >= 0
    logits, labels = logits[keep], labels[keep].to(logits.device)
    out = {}
    for k in ks:
        k_eff = min(k, logits.shape[1])
        hits = (logits.topk(k_eff, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
        out[k] = hits.float().mean().item()
    return out
