"""The one place where selfsup reaches into Lightning internals, because no public API exists.

- :func:`batches_done_in_epoch`: the batches training has processed in the current epoch (for exact
  resume; Lightning exposes no public counter for it).
- :func:`epochs_completed`: epochs fully processed (what checkpoint names and reports count).
- :class:`RunCheckpoint`: Lightning's ``ModelCheckpoint`` writes ``last.ckpt`` only in an epoch where a
  top-k checkpoint is also saved (so with a monitor that stops improving, ``last.ckpt`` froze at the
  best epoch); this one writes it at the end of every epoch and of training, whatever the monitor.
- :class:`EpochEndProgressBar`: the progress bar refreshed at the end of every epoch too.
- :func:`quiet`: the one place where messages of Lightning and its dependencies that say nothing
  to a selfsup user are filtered, narrowly, by their text; :class:`ModelSummaryWithoutFlops` drops
  the summary's ``Total FLOPs: 0`` (FLOPs are counted only with an ``example_input_array``).
- :func:`throttle_sigterm_broadcast`: under DDP, Lightning's training loop broadcasts rank 0's
  SIGTERM flag and reads it on the host (``.item()``) before *every* batch, a host sync and a barrier
  per step. This makes the check happen every ``every`` steps instead.

Checked against Lightning 2.6; each function fails soft (falls back to Lightning's own behaviour)
when the internals it names are absent.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterator

import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, TQDMProgressBar


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


def epochs_completed(trainer) -> int:
    """Training epochs whose batches have all been processed: at ``on_train_epoch_end`` this already
    counts the epoch that is ending (Lightning's ``current_epoch`` is still its index, one less).
    The same count as :func:`selfsup.export.epochs_trained` reads from a checkpoint."""
    try:
        return int(trainer.fit_loop.epoch_progress.total.processed)
    except AttributeError:
        return int(getattr(trainer, "current_epoch", 0))


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always the run's latest state.

    Lightning 2.6 refreshes ``last.ckpt`` only when a top-k checkpoint is saved in the same step
    (``on_train_epoch_end``: "Only save last checkpoint if a checkpoint was actually saved"), so a
    monitored value that stops improving froze ``last.ckpt`` at its best epoch while training went
    on. Here ``last.ckpt`` is also written at the end of every epoch (or validation) and at the end of
    training whenever it does not yet hold the current step; top-k checkpoints are unchanged.

    ``{epoch}`` in file names counts the epochs completed (``epoch=003`` after three epochs), the
    count that ``selfsup probe`` and ``selfsup export`` report, instead of Lightning's 0-based index.
    """

    _last_step_written: int | None = None

    def _monitor_candidates(self, trainer) -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        candidates["epoch"] = torch.tensor(epochs_completed(trainer))
        return candidates

    def _save_last_checkpoint(self, trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_step_written = trainer.global_step

    def _write_last(self, trainer) -> None:
        """Write ``last.ckpt`` unless it already holds this step (a real file, also under
        ``save_last='link'``, whose link would point at an older top-k checkpoint)."""
        if not self.save_last or self._last_step_written == trainer.global_step:
            return
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        candidates = self._monitor_candidates(trainer)
        filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        previous, self.last_model_path = self.last_model_path, filepath
        latest_top_k = self._last_checkpoint_saved
        self._save_checkpoint(trainer, filepath)
        self._last_checkpoint_saved = latest_top_k  # a later link must point at a top-k file
        self._last_step_written = trainer.global_step
        if previous and previous != filepath and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._write_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._write_last(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        # replaces Lightning's, which writes last.ckpt at the end only when nothing was saved before
        self._write_last(trainer)


class EpochEndProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, refreshed every ``refresh_rate`` steps (each refresh reads the logged
    values: a host sync on a GPU) and also at the end of every epoch, so an epoch or a run shorter than
    ``refresh_rate`` steps (``max_steps``) does not end showing ``0/N``."""

    _batches_seen = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._batches_seen = 0
        # epochs counted from 1, as checkpoint names and reports count them ("Epoch 3/20")
        bound = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        number = trainer.current_epoch + 1
        self.train_progress_bar.set_description(f"Epoch {number}/{bound}" if bound else f"Epoch {number}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._batches_seen = batch_idx + 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and bar.n != self._batches_seen:
            bar.n = self._batches_seen
            bar.refresh()
        super().on_train_epoch_end(trainer, pl_module)


# Warnings (regular expressions of their start) that a selfsup run raises by design or that come
# from inside Lightning and torch with nothing for the user to do.
QUIET_WARNINGS = (
    # augmentation lives in the module's on_after_batch_transfer by design
    ".*overridden `on_after_batch_transfer`",
    # pretraining methods have no validation_step; the held-out split serves kNN callbacks
    ".*`val_dataloader` but have no `validation_step`",
    # `selfsup` hands LightningCLI the arguments it read itself (without --debug)
    ".*LightningCLI's args parameter is intended",
    # frozen teachers, start encoders and backbones are kept in eval mode by design
    r".*Found \d+ module\(s\) in eval mode at the start of training",
    # a resumed run writes to a new version folder by design (nothing of the old one is overwritten)
    ".*The dirpath has changed from .* won't be reloaded",
    # Lightning 2.6's own use of torch's pytree API
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated",
)
# Lines of Lightning's log (substrings) that advertise or narrate its internals.
QUIET_LOG_LINES = (
    "try installing [litlogger]",
    "Loading `train_dataloader` to estimate number of stepping batches",
    # selfsup's own summary (ModelSummaryWithoutFlops) is in the callbacks on purpose
    "Skipping setting a default `ModelSummary` callback",
)


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(line in message for line in QUIET_LOG_LINES)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Within a ``selfsup`` command: leave out :data:`QUIET_WARNINGS` and :data:`QUIET_LOG_LINES`,
    and nothing else. Scoped: selfsup sets no process-wide filter."""
    handlers = [
        handler
        for name in ("lightning.pytorch", "lightning.fabric", "lightning")
        for handler in logging.getLogger(name).handlers
    ]
    drop = _DropLines()
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for handler in handlers:
            handler.addFilter(drop)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(drop)


class ModelSummaryWithoutFlops(ModelSummary):
    """Lightning's model summary without its ``Total FLOPs: 0`` line: FLOPs are counted only for a
    module with an ``example_input_array``, which selfsup's methods (multi-view batches) do not set."""

    @staticmethod
    def summarize(
        summary_data,
        total_parameters,
        trainable_parameters,
        model_size,
        total_training_modes,
        total_flops=0,
        **kwargs,
    ) -> None:
        from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

        if not total_flops:
            summary_data = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            total_flops,
            *summary_data,
        )
        if not total_flops:
            table = "\n".join(line for line in table.splitlines() if "total flops" not in line.lower())
        logging.getLogger("lightning.pytorch.callbacks.model_summary").info("\n" + table)
