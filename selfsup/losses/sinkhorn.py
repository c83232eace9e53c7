"""Sinkhorn-Knopp equipartition of a batch over prototypes (Caron et al., 2020, "Unsupervised
Learning of Visual Features by Contrasting Cluster Assignments", sec. 3.1 and Algorithm 1; used for
the teacher by Oquab et al., 2023, "DINOv2", sec. 4).

Followed: facebookresearch/dinov2 ``dinov2/loss/dino_clstoken_loss.py`` (``sinkhorn_knopp_teacher``)
and facebookresearch/swav ``main_swav.py`` (``distributed_sinkhorn``), which are the same algorithm:
the exponentiated scores are normalised to sum to 1 over the global batch, then each iteration makes
every prototype's total weight ``1/K`` (sums all-reduced over processes) and every sample's ``1/B``;
the result is scaled by ``B`` so that each sample's assignment sums to 1. ``B`` is the number of
rows over all processes, all-reduced (as dinov2's ``iBOTPatchLoss.sinkhorn_knopp_teacher`` does for its
masked patches; its ``DINOLoss`` and SwAV take local rows times the world size, the same number
where every process holds as many rows).

Departure: the scores are shifted by their global maximum before ``exp`` (one all-gather of a
scalar), which leaves the result unchanged (the first normalisation divides the shift out) but keeps
``exp`` finite for any logits and temperature; the references exponentiate unshifted.
"""

from __future__ import annotations

import math

import torch

from selfsup import distributed


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Soft assignments of the global batch to ``K`` prototypes with equal prototype mass.

    Args:
        scores: ``[B, K]`` logits (this process's ``B`` samples). Computed in float32 or wider.
        temperature: ``epsilon`` > 0 (0.05 in SwAV; the teacher temperature in DINOv2).
        iterations: alternations of prototype and sample normalisation (3 in both references).

    Returns ``[B, K]`` in the dtype of the computation (float32 for half inputs): each row sums to 1,
    and over the global batch (all processes) every column sums to ``B_global / K`` after the last
    prototype step, before the final sample step re-normalises the rows. No gradient flows. Every
    process must call it (it issues ``2 + iterations`` collectives under a process group); processes
    may hold different numbers of rows.
    """
    if scores.dim() != 2:
        raise ValueError(
            f"scores must be [B, K] logits, got shape {tuple(scores.shape)}; flatten the batch first."
        )
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0 (0.05 in SwAV), got {temperature!r}.")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1 (3 in the references), got {iterations!r}.")
    scores = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    logits = scores / temperature
    local_max = logits.amax().reshape(1) if logits.numel() else logits.new_full((1,), -math.inf)
    shift = distributed.gather_no_grad(local_max).amax()
    q = torch.exp(logits - shift).t()  # [K, B]: the references' layout
    num_prototypes = q.shape[0]
    # the global total and the global number of samples in one all-reduce: exact also where the
    # processes hold different numbers of rows (iBOT's masked patches)
    total = distributed.all_reduce_sum(torch.stack([q.sum(), q.new_tensor(float(q.shape[1]))]))
    q = q / total[0]
    batch = total[1]
    for _ in range(iterations):
        q = q / distributed.all_reduce_sum(q.sum(dim=1, keepdim=True)) / num_prototypes
        q = q / q.sum(dim=0, keepdim=True) / batch
    return (q * batch).t()
