"""Evaluation during and after pretraining, as Lightning callbacks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.table import Table

from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy


def encoder_knn_top1(
    module,
    datamodule,
    k: int,
    temperature: float,
    pool: str,
    encoder=None,
    description: str | None = None,
    max_train_samples: int | None = None,
) -> float:
    """kNN top-1 of ``encoder`` (default: the module's): bank = training split (or ``max_train_samples``
    of it), queries = held-out split."""
    encoder = encoder if encoder is not None else getattr(module, "backbone", None) or module.encoder
    bank_loader = datamodule.eval_dataloader("train", max_samples=max_train_samples)
    bank, bank_labels = extract_features(
        encoder,
        bank_loader,
        module.normalize,
        pool,
        description=description and f"{description}: train features",
    )
    query, query_labels = extract_features(
        encoder,
        datamodule.eval_dataloader("val"),
        module.normalize,
        pool,
        description=description and f"{description}: held-out features",
    )
    return knn_accuracy(
        bank, bank_labels, query, query_labels, k, temperature, num_classes=datamodule.num_classes
    )


class KNNReport(Callback):
    """At the end of ``fit``: kNN top-1 on the held-out split of the encoder as it was initialised and
    as trained, printed as a table, logged (``knn/top1_init``, ``knn/top1_trained``) and written to
    ``knn_report.json`` in the run folder (when the trainer has a logger). The proof that pretraining learned something.

    Args:
        k: neighbours.
        temperature: vote temperature.
        pool: feature pooling (``token`` or ``avg``); None takes the method's default.
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, pool: str | None = None) -> None:
        self.k = k
        self.temperature = temperature
        self.pool = pool
        self.initial_state: dict[str, torch.Tensor] | None = None
        self.results: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # runs before a checkpoint is restored: these are the weights training started from
        if stage == "fit" and self.initial_state is None:
            self.initial_state = {
                k: v.detach().cpu().clone() for k, v in _backbone(pl_module).state_dict().items()
            }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.initial_state is None or trainer.datamodule is None:
            return
        # Finish Lightning's rich progress bar first (rich's Progress.stop is idempotent), so that the
        # evaluation and the table print below the final training bar instead of above it.
        progress = getattr(trainer.progress_bar_callback, "progress", None)
        if progress is not None and callable(getattr(progress, "stop", None)):
            progress.stop()
        pool = self.pool or pl_module.default_pool
        initial = copy.deepcopy(_backbone(pl_module))
        initial.load_state_dict(self.initial_state)
        self.results = {
            "top1_init": encoder_knn_top1(
                pl_module,
                trainer.datamodule,
                self.k,
                self.temperature,
                pool,
                initial,
                description="kNN (initial encoder)",
            ),
            "top1_trained": encoder_knn_top1(
                pl_module,
                trainer.datamodule,
                self.k,
                self.temperature,
                pool,
                description="kNN (trained encoder)",
            ),
        }
        table = Table(
            title=f"kNN top-1 on the held-out split (k={self.k}, T={self.temperature}, pool={pool})"
        )
        table.add_column("encoder")
        table.add_column("top-1 %", justify="right")
        table.add_row("random init", f"{100 * self.results['top1_init']:.2f}")
        table.add_row(
            f"pretrained ({trainer.current_epoch} epochs, {trainer.global_step} steps)",
            f"{100 * self.results['top1_trained']:.2f}",
        )
        Console().print(table)
        for logger in trainer.loggers:
            logger.log_metrics({f"knn/{k}": v for k, v in self.results.items()}, step=trainer.global_step)
        if trainer.logger is not None and trainer.log_dir:  # no logger: no run folder to write into
            report = dict(
                self.results,
                k=self.k,
                temperature=self.temperature,
                pool=pool,
                epochs=trainer.current_epoch,
                steps=trainer.global_step,
            )
            Path(trainer.log_dir).mkdir(parents=True, exist_ok=True)
            (Path(trainer.log_dir) / "knn_report.json").write_text(json.dumps(report, indent=2))


def _backbone(pl_module):
    """The network a method declares for evaluation (``backbone``; the encoder otherwise)."""
    return getattr(pl_module, "backbone", None) or pl_module.encoder
