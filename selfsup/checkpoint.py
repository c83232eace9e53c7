"""Writing training checkpoints atomically, loading them safely, and resuming exactly.

Saves go to a temporary file in the target folder, are flushed to disk, and replace the target in
one ``os.replace``: a crash or a kill during a save leaves the previous checkpoint intact, never a
truncated one. Loads use ``torch.load(weights_only=True)``, which refuses pickled code. What a
checkpoint records about itself, and reading it back, is ``selfsup.contract``.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from selfsup import distributed
from selfsup._lightning import batches_done_in_epoch
from selfsup.atomic import atomic_write_bytes
from selfsup.contract import CheckpointError, epochs_trained, load_checkpoint

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "ExactResume",
    "atomic_torch_save",
    "atomic_write_bytes",
    "epochs_trained",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
]


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic local saves and ``weights_only=True`` loads."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return super().load_checkpoint(
            path, map_location=map_location, weights_only=True if weights_only is None else weights_only
        )


def rng_state() -> dict[str, Any]:
    """This process's random states, as tensors and plain lists (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ExactResume(Callback):
    """Makes a resumed run continue exactly where the interrupted one stopped, and saves one when
    the job is told to stop (SIGTERM, as schedulers send before preemption).

    Checkpoints keep every process's random states (augmentation and masking draw from them) and
    the position in the epoch's data order; when training resumes, at ``on_train_start`` (after
    everything that resuming itself does), both are put back: the random states, and the
    :class:`~selfsup.data.resumable.ResumableSampler` skips the batches already trained on. (Lightning
    restores a stateful dataloader only if it did not load it before the checkpoint, which its
    ``estimated_stepping_batches`` does when ``max_epochs`` is set, so the position is kept here.)
    With the data module's resumable loader, a resumed run reaches the same weights as an
    uninterrupted one.

    On SIGTERM, Lightning finishes the current step and raises ``SIGTERMException``; this callback
    then writes ``last.ckpt`` (atomically) in the checkpoint folder, and the ``selfsup`` command
    exits with status 0: resume with ``--ckpt_path last``.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._trainer = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        progress = batches_done_in_epoch(trainer)
        return {
            "ranks": distributed.gather_object(rng_state()),
            "epoch": trainer.current_epoch if trainer is not None else 0,
            "batches": int(progress),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        callback = trainer.checkpoint_callback
        folder = (
            Path(callback.dirpath)
            if callback is not None and callback.dirpath
            else Path(trainer.default_root_dir)
        )
        path = folder / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # the full state: this is a resume point
        rank_zero_info(f"SIGTERM: saved a resumable checkpoint to {path}; resume with --ckpt_path last.")

    def on_train_start(self, trainer, pl_module) -> None:
        if not self._pending:
            return
        ranks = self._pending.get("ranks", [])
        if len(ranks) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint holds random states of {len(ranks)} processes but this run has "
                f"{trainer.world_size}: augmentation will not continue exactly as before."
            )
        else:
            set_rng_state(ranks[trainer.global_rank])
        loaders = trainer.train_dataloader
        loaders = (
            loaders.values()
            if isinstance(loaders, dict)
            else loaders
            if isinstance(loaders, (list, tuple))
            else [loaders]
        )
        for loader in loaders:
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "resume"):
                sampler.resume(self._pending["epoch"], self._pending["batches"] * loader.batch_size)
        self._pending = None
