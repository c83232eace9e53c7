"""SwAV's swapped prediction: lightly's SwaVLoss and a naive loop, in value and gradient; the queue's
rows join the codes' normalisation only; 2 gloo processes with different inputs against one process
holding the concatenated batch.

lightly's loss is the reference's (facebookresearch/swav ``main_swav.py``) when every
high-resolution crop is assigned (``crops_for_assign`` = the global crops), which is how it is
compared here; its queue rows come after the batch, the reference's before, which leaves the codes
of the batch unchanged (Sinkhorn-Knopp treats samples alike)."""

import math

import pytest
import torch
from lightly.loss import SwaVLoss
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

from selfsup.losses import SwAVLoss
from tests.loss_processes import WORLD, one_process, two_processes

N, K = 6, 5


def scores(seed: int, crops: int = 4, n: int = N) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.nn.functional.normalize(torch.randn(n, K, generator=g, dtype=torch.float64), dim=1)
        for _ in range(crops)
    ]


def naive(crop_scores, assigned, t=0.1, eps=0.05) -> float:
    """The reference's loop, with lightly's Sinkhorn-Knopp for the codes and plain Python for the rest."""
    crops, total = len(crop_scores), 0.0
    for i in range(assigned):
        q = lightly_sinkhorn(crop_scores[i].detach(), 3, eps).tolist()
        sub = 0.0
        for v in range(crops):
            if v == i:
                continue
            for row_q, row in zip(q, crop_scores[v].tolist(), strict=True):
                logits = [x / t for x in row]
                log_z = math.log(sum(math.exp(x) for x in logits))
                sub -= sum(qk * (x - log_z) for qk, x in zip(row_q, logits, strict=True)) / len(q)
        total += sub / (crops - 1)
    return total / assigned


@pytest.mark.parametrize("assigned", [1, 2])
def test_equals_a_naive_loop(assigned):
    s = scores(0)
    assert SwAVLoss()(s, assigned).item() == pytest.approx(naive(s, assigned), rel=1e-9)


def test_equals_lightly_in_value_and_gradient_with_two_global_and_two_local_crops():
    s = [t.requires_grad_() for t in scores(1)]
    loss = SwAVLoss()(s, 2)
    ours = torch.autograd.grad(loss, s)
    theirs_loss = SwaVLoss()(s[:2], s[2:])
    theirs = torch.autograd.grad(theirs_loss, s)
    torch.testing.assert_close(loss, theirs_loss.reshape(()))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0


def test_the_queue_joins_the_codes_only_as_lightly():
    s = [t.requires_grad_() for t in scores(2)]
    queue = [t.requires_grad_() for t in scores(3, crops=2, n=8)]
    loss = SwAVLoss()(s, 2, queue)
    theirs = SwaVLoss()(s[:2], s[2:], queue)
    torch.testing.assert_close(loss, theirs.reshape(()))
    assert not torch.allclose(loss, SwAVLoss()(s, 2))  # the queue changes the codes
    loss.backward()
    assert all(q.grad is None for q in queue)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="temperature"):
        SwAVLoss(temperature=0.0)
    with pytest.raises(ValueError, match="assigned"):
        SwAVLoss()(scores(4), 5)
    with pytest.raises(ValueError, match="one tensor per assigned crop"):
        SwAVLoss()(scores(4), 2, scores(5, crops=1))


def two_crop_inputs(seed: int) -> list[torch.Tensor]:
    return scores(seed, crops=3)


def swav_three_crops(*crop_scores):
    return SwAVLoss()(list(crop_scores), 2)


def test_two_processes_match_one_process_with_the_concatenated_batch(tmp_path):
    results = two_processes(tmp_path, lambda: swav_three_crops, two_crop_inputs)
    loss, grads = one_process(lambda: swav_three_crops, two_crop_inputs)
    # the codes use the global batch; each rank's loss is the mean over its samples; DDP averages
    assert not torch.allclose(results[0]["loss"], results[1]["loss"])
    torch.testing.assert_close(sum(r["loss"] for r in results) / WORLD, loss)
    for r, result in enumerate(results):
        rows = slice(r * N, (r + 1) * N)
        for ours, expected in zip(result["grads"], grads, strict=True):
            # no gradient crosses processes (the codes have none): each rank's loss is the mean over its
            # N samples, the single process's over WORLD * N
            torch.testing.assert_close(ours / WORLD, expected[rows])
