"""Weighted k-nearest-neighbour classification of frozen features (Wu et al. 2018, "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination"; the protocol of DINO and solo-learn):
cosine similarity, the k most similar training samples vote with weight ``exp(similarity / T)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores ``[M, num_classes]`` for ``M`` test features.

    Args:
        train_features: ``[N, D]`` bank; rows with label ``< 0`` (unlabelled) are ignored.
        train_labels: ``[N]`` int labels.
        test_features: ``[M, D]``.
        k: neighbours (clipped to the bank size).
        temperature: vote weight ``exp(cos / temperature)``.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}.")
    keep = train_labels >= 0
    bank = F.normalize(train_features[keep].float(), dim=1)
    labels = train_labels[keep].long()
    if len(bank) == 0:
        raise ValueError("the kNN bank has no labelled samples.")
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(test_features), chunk_size):
        query = F.normalize(test_features[start : start + chunk_size].float(), dim=1)
        sims, idx = (query @ bank.T).topk(k, dim=1)
        weights = (sims / temperature).exp()
        votes = torch.zeros(len(query), num_classes, device=query.device)
        votes.scatter_add_(1, labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Top-1 accuracy (0..1) of the weighted kNN classifier on the labelled test samples."""
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    labelled = test_labels >= 0
    scores = knn_scores(train_features, train_labels, test_features[labelled], num_classes, k, temperature)
    return (scores.argmax(1) == test_labels[labelled].to(scores.device)).float().mean().item()
