import math

import pytest
import torch

from selfsup.eval import knn_accuracy, knn_scores


def naive_knn(train, train_labels, test, num_classes, k, temperature):
    """One query at a time: sort all cosine similarities, let the top k vote with exp(s / T)."""
    out = []
    for q in test:
        sims = [
            (float(torch.dot(q, x) / (q.norm() * x.norm())), int(y))
            for x, y in zip(train, train_labels, strict=True)
            if y >= 0
        ]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for s, y in sims[:k]:
            votes[y] += math.exp(s / temperature)
        out.append(votes)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize(("k", "temperature"), [(1, 0.07), (5, 0.07), (20, 0.5), (200, 0.07)])
def test_scores_equal_naive_reference(k, temperature):
    g = torch.Generator().manual_seed(k)
    train = torch.randn(40, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (40,), generator=g)
    labels[:3] = -1  # unlabelled samples never vote
    test = torch.randn(9, 6, generator=g, dtype=torch.float64)
    scores = knn_scores(train, labels, test, 4, k=k, temperature=temperature, chunk_size=4)
    reference = naive_knn(train, labels, test, 4, min(k, 37), temperature)
    torch.testing.assert_close(scores.double(), reference, rtol=1e-4, atol=1e-6)


def test_accuracy_on_separable_clusters_and_chance():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 5
    labels = torch.arange(5).repeat(20)
    train = centres[labels] + 0.1 * torch.randn(100, 16, generator=g)
    test = centres[labels] + 0.1 * torch.randn(100, 16, generator=g)
    assert knn_accuracy(train, labels, test, labels, k=10) == 1.0
    shuffled = labels[torch.randperm(100, generator=g)]
    assert knn_accuracy(train, shuffled, test, labels, k=10) < 0.5


def test_invalid_arguments():
    with pytest.raises(ValueError):
        knn_scores(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), torch.randn(1, 2), 2, k=0)
    with pytest.raises(ValueError, match="no labelled"):
        knn_scores(torch.randn(3, 2), -torch.ones(3, dtype=torch.long), torch.randn(1, 2), 2)
