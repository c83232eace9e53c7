"""Image-text retrieval on held-out pairs: image→text and text→image recall@k, and the mean and
median rank of each query's own pair among all candidates.

Followed: open_clip's ``src/open_clip_train/train.py`` (``get_clip_metrics``): pair ``i`` is image ``i``
with caption ``i``; a query's rank is the position of its pair when every candidate is sorted by
cosine similarity. open_clip sorts the whole ``[N, N]`` matrix at once; here the rank is the count of
candidates scored strictly above the pair, over blocks of queries, so that a held-out split of 50,000
pairs needs ``block x N`` floats rather than ``N x N`` (the two agree except on exact ties, which
open_clip breaks by sort order and this counts in the query's favour).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from selfsup.eval.zeroshot import uint8_normalizer

RECALL_AT = (1, 5, 10)


def pair_ranks(queries: torch.Tensor, candidates: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """``[N]`` 0-based rank of candidate ``i`` among all candidates for query ``i`` (normalised rows)."""
    if queries.shape != candidates.shape:
        raise ValueError(
            f"retrieval needs one caption per image: got {len(queries)} queries and {len(candidates)} "
            "candidates of the same pairs."
        )
    ranks = []
    for start in range(0, len(queries), block):
        q = queries[start : start + block].float()
        scores = q @ candidates.float().T
        rows = torch.arange(len(q), device=q.device)
        own = scores[rows, start + rows].unsqueeze(-1)  # from the same product: no round-off between them
        ranks.append((scores > own).sum(-1))
    return torch.cat(ranks)


def retrieval_metrics(
    image: torch.Tensor, text: torch.Tensor, recall_at: Sequence[int] = RECALL_AT
) -> dict[str, float]:
    """Recall@k (fractions), mean and median rank (1-based), both ways, for normalised pair
    embeddings ``image[i] <-> text[i]``: keys ``image_to_text_R@1`` ... ``text_to_image_median_rank``,
    as open_clip names them."""
    metrics: dict[str, float] = {}
    for name, (queries, candidates) in {
        "image_to_text": (image, text),
        "text_to_image": (text, image),
    }.items():
        ranks = pair_ranks(queries, candidates).float()
        metrics[f"{name}_mean_rank"] = float(ranks.mean()) + 1
        metrics[f"{name}_median_rank"] = float(torch.quantile(ranks, 0.5).floor()) + 1  # np.floor(np.median)
        for k in recall_at:
            metrics[f"{name}_R@{k}"] = float((ranks < k).float().mean())
    return metrics


@torch.no_grad()
def pair_embeddings(
    model: Any,
    loader: Iterable,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``(image [N, D], text [N, D])`` embeddings of a loader of ``(uint8 images, tokens)``
    pairs, with a model that has open_clip's ``encode_image`` / ``encode_text``."""
    normalize = uint8_normalizer(mean, std, device)
    images, texts = [], []
    for batch_images, tokens in loader:
        images.append(model.encode_image(normalize(batch_images), normalize=True).float())
        texts.append(model.encode_text(tokens.to(device), normalize=True).float())
    return torch.cat(images), torch.cat(texts)
