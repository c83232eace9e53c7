"""The one place where selfsup reaches into Lightning internals, because no public API exists.

- :func:`batches_done_in_epoch`: the batches training has processed in the current epoch (for exact
  resume; Lightning exposes no public counter for it).
- :func:`throttle_sigterm_broadcast`: under DDP, Lightning's training loop broadcasts rank 0's
  SIGTERM flag and reads it on the host (``.item()``) before *every* batch, a host sync and a barrier
  per step. This makes the check happen every ``every`` steps instead.

Checked against Lightning 2.6; each function fails soft (falls back to Lightning's own behaviour)
when the internals it names are absent.
"""

from __future__ import annotations

import functools


def batches_done_in_epoch(trainer) -> int:
    """Training batches processed so far in the current epoch (0 without a trainer)."""
    if trainer is None:
        return 0
    try:
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
    except AttributeError:
        return 0


def throttle_sigterm_broadcast(trainer, every: int) -> bool:
    """Let the per-batch SIGTERM broadcast of ``trainer``'s training loop run only every ``every``
    batches (a SIGTERM is then acted on within ``every`` steps). Returns whether it was installed."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    original = getattr(loop, "_broadcast_sigterm_tensor", None)
    if original is None or every <= 1 or getattr(original, "_selfsup_throttled", False):
        return False
    calls = {"n": 0}

    @functools.wraps(original)
    def throttled() -> None:
        calls["n"] += 1
        if calls["n"] % every == 0:
            original()

    throttled._selfsup_throttled = True  # type: ignore[attr-defined]
    loop._broadcast_sigterm_tensor = throttled
    return True
