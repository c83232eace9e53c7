"""Retrieval recall@k and ranks: against open_clip's ``get_clip_metrics`` and a naive loop."""

import pytest
import torch
import torch.nn.functional as F

from selfsup.eval.retrieval import pair_ranks, retrieval_metrics


def naive_ranks(queries, candidates):
    ranks = []
    for i in range(len(queries)):
        scores = [float(queries[i] @ candidates[j]) for j in range(len(candidates))]
        order = sorted(range(len(candidates)), key=lambda j: -scores[j])
        ranks.append(order.index(i))
    return torch.tensor(ranks)


def pairs(n=37, d=8, noise=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    text = F.normalize(image + noise * torch.randn(n, d, generator=g), dim=-1)
    return image, text


def test_ranks_equal_a_naive_sort_in_blocks_of_any_size():
    image, text = pairs()
    expected = naive_ranks(image, text)
    for block in (1, 5, 37, 4096):
        assert torch.equal(pair_ranks(image, text, block=block), expected)
    assert torch.equal(pair_ranks(text, image), naive_ranks(text, image))
    with pytest.raises(ValueError, match="one caption per image"):
        pair_ranks(image, text[:-1])


@pytest.mark.parametrize("noise", [0.3, 1.0, 3.0])
def test_metrics_equal_open_clip(noise):
    get_clip_metrics = pytest.importorskip("open_clip_train.train").get_clip_metrics
    image, text = pairs(n=64, noise=noise, seed=1)
    ours = retrieval_metrics(image, text)
    reference = get_clip_metrics(image, text, logit_scale=torch.tensor(100.0))
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        assert ours[key] == pytest.approx(float(value)), key
    # the figures move with the noise: perfect pairs retrieve themselves
    perfect = retrieval_metrics(image, image)
    assert perfect["image_to_text_R@1"] == 1.0 and perfect["text_to_image_mean_rank"] == 1.0
    assert ours["image_to_text_R@1"] < 1.0
