"""Zero-shot top-1 during and after image-text pretraining, as a Lightning callback."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.table import Table

from selfsup.eval.zeroshot import zero_shot_accuracy

ZEROSHOT_MONITOR = "val/zeroshot_top1"


class ZeroShotMonitor(Callback):
    """Zero-shot classification of the data module's held-out split by text (the data's
    ``classnames`` and ``templates``, open_clip's classifier builder) every ``every_n_epochs``
    epochs: logged as ``val/zeroshot_top1`` on every process, so a checkpoint can monitor it
    (``checkpoint.monitor: val/zeroshot_top1``, ``checkpoint.mode: max``). With ``report``, it also
    runs before training and at its end, prints a table of both, and writes ``zeroshot_report.json``
    in the run folder.

    The module must offer ``encode_image`` / ``encode_text`` (:class:`selfsup.CLIP`) and the data
    module ``eval_dataloader``, ``classnames`` and ``templates`` (:class:`selfsup.ImageTextDataModule`).
    Every process evaluates the whole held-out split (small sets; the value is then the same on all).
    """

    def __init__(self, every_n_epochs: int = 1, report: bool = True, max_samples: int | None = None) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        self.every_n_epochs = every_n_epochs
        self.report = report
        self.max_samples = max_samples
        self.results: dict[str, float] = {}

    def evaluate(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, float]:
        data = trainer.datamodule
        for needed in ("classnames", "templates", "eval_dataloader"):
            if not hasattr(data, needed):
                raise TypeError(
                    f"ZeroShotMonitor needs a data module with {needed} (selfsup.ImageTextDataModule), got "
                    f"{type(data).__name__}."
                )
        loader = data.eval_dataloader("val", max_samples=self.max_samples)
        return zero_shot_accuracy(
            module, loader, data.classnames, data.templates, module.context_length, module.mean, module.std
        )

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.report and not trainer.sanity_checking:
            self.results = {f"{k}_init": v for k, v in self.evaluate(trainer, module).items()}

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0 or trainer.fast_dev_run:
            scores = self.evaluate(trainer, module)
            self.results.update({f"{k}_trained": v for k, v in scores.items()})
            module.log(ZEROSHOT_MONITOR, scores["top1"], on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.report:
            return
        self.results.update({f"{k}_trained": v for k, v in self.evaluate(trainer, module).items()})
        if not trainer.is_global_zero:
            return
        table = Table(title="zero-shot accuracy on the held-out split")
        for column in ("encoder", "top-1", "top-5"):
            table.add_column(column)
        for name, key in (("initialised", "init"), ("trained", "trained")):
            if f"top1_{key}" in self.results:
                table.add_row(
                    name, f"{self.results[f'top1_{key}']:.1%}", f"{self.results[f'top5_{key}']:.1%}"
                )
        Console().print(table)
        if trainer.log_dir is not None:
            path = Path(trainer.log_dir) / "zeroshot_report.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.results, indent=2))
