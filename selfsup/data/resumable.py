"""Training data order that survives a restart: exact resume, even from the middle of an epoch.

- :class:`ResumableSampler` shuffles with a generator seeded by ``(seed, epoch)`` (never the global
  RNG), shards across processes like ``DistributedSampler`` (which it is, so Lightning keeps it
  under DDP), and can start an epoch after the samples already consumed.
- :class:`ResumableDataLoader` is a ``DataLoader`` with ``state_dict`` / ``load_state_dict``:
  Lightning stores its state in every checkpoint (the epoch, and the batches training has
  processed in it, read from the trainer rather than from the iterator, which prefetches) and
  restores it before iterating again, where it can (``selfsup.checkpoint.ExactResume`` does it
  where Lightning cannot). Its worker seeds come from its own generator, so creating an iterator
  leaves the global RNG (augmentation, masking) untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (also for one process) whose epoch can start at ``start`` samples."""

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self._resume_epoch: int | None = None
        self._resume_samples = 0

    def resume(self, epoch: int, samples: int) -> None:
        """The next iteration of ``epoch`` skips its first ``samples`` (of this process)."""
        self._resume_epoch, self._resume_samples = epoch, samples

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._resume_epoch == self.epoch:
            indices = indices[self._resume_samples :]
        self._resume_epoch, self._resume_samples = None, 0
        return iter(indices)


class ResumableDataLoader(DataLoader):
    """A training ``DataLoader`` over a :class:`ResumableSampler` that Lightning checkpoints.

    ``batches_done`` returns the batches training has processed in the current epoch (the data
    module reads it from the trainer).
    """

    def __init__(
        self, dataset: Dataset, sampler: ResumableSampler, batches_done: Callable[[], int], **kwargs: Any
    ) -> None:
        super().__init__(
            dataset, sampler=sampler, generator=torch.Generator().manual_seed(sampler.seed), **kwargs
        )
        self._batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self._batches_done())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)
