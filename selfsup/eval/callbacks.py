"""Evaluation during and after pretraining, as Lightning callbacks."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.table import Table

from selfsup.eval.features import extract_features, extract_features_of
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.probe_cache import ProbeCache, data_description, default_cache_folder, weights_digest


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

    Its cost is the forward pass of both encoders over the training split (the kNN bank) and the
    held-out split: with a small ``train_subset`` mostly the held-out split (``val_subset`` bounds
    it). Each batch is decoded once for both encoders, and the initial encoder's features are cached
    on disk, keyed by its weights, the pooling and the data: a run that starts from the same weights
    (the same seed and model) on the same data reads them back. Progress and the time spent are
    printed.

    Args:
        k: neighbours.
        temperature: vote temperature.
        pool: feature pooling (``token`` or ``avg``); None takes the method's default.
        cache_dir: where the initial encoder's features are cached: ``"auto"`` (``$SELFSUP_CACHE/features``
            or ``~/.cache/selfsup/features``, as ``selfsup probe``), a folder, or None for no cache.
    """

    def __init__(
        self,
        k: int = 20,
        temperature: float = 0.07,
        pool: str | None = None,
        cache_dir: str | None = "auto",
    ) -> None:
        self.k = k
        self.temperature = temperature
        self.pool = pool
        self.cache_dir = cache_dir
        self.initial_state: dict[str, torch.Tensor] | None = None
        self.results: dict[str, float] = {}
        self.initial_from_cache = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # runs before a checkpoint is restored: these are the weights training started from
        if stage == "fit" and self.initial_state is None:
            self.initial_state = {
                k: v.detach().cpu().clone() for k, v in _backbone(pl_module).state_dict().items()
            }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.initial_state is None or trainer.datamodule is None:
            return
        start = time.perf_counter()
        # Finish Lightning's rich progress bar first (rich's Progress.stop is idempotent), so that the
        # evaluation and the table print below the final training bar instead of above it.
        progress = getattr(trainer.progress_bar_callback, "progress", None)
        if progress is not None and callable(getattr(progress, "stop", None)):
            progress.stop()
        pool = self.pool or pl_module.default_pool
        datamodule = trainer.datamodule
        trained = _backbone(pl_module)
        cache, key = self._cache_and_key(pl_module, datamodule, pool)
        initial_features = cache.load_features(key) if cache is not None else None
        self.initial_from_cache = initial_features is not None
        encoders = [trained]
        if initial_features is None:
            initial = copy.deepcopy(trained)
            initial.load_state_dict(self.initial_state)
            encoders.append(initial)
        features = {}
        for split, label in (("train", "training"), ("val", "held-out")):
            which = "trained encoder" if len(encoders) == 1 else "trained and initial encoders"
            out, features[f"{split}_y"] = extract_features_of(
                encoders,
                datamodule.eval_dataloader(split),
                pl_module.normalize,
                pool,
                description=f"kNN report: {label} features ({which})",
            )
            features[f"{split}_trained"] = out[0]
            if len(out) > 1:
                features[f"{split}_x"] = out[1]
        if initial_features is None:
            initial_features = {k: features[k] for k in ("train_x", "train_y", "val_x", "val_y")}
            if cache is not None:
                cache.save_features(key, initial_features)

        def top1(split_features: dict[str, torch.Tensor], suffix: str) -> float:
            return knn_accuracy(
                split_features[f"train_{suffix}"],
                split_features["train_y"],
                split_features[f"val_{suffix}"],
                split_features["val_y"],
                self.k,
                self.temperature,
                num_classes=datamodule.num_classes,
            )

        self.results = {"top1_init": top1(initial_features, "x"), "top1_trained": top1(features, "trained")}
        table = Table(
            title=f"kNN top-1 on the held-out split (k={self.k}, T={self.temperature}, pool={pool})"
        )
        table.add_column("encoder")
        table.add_column("top-1 %", justify="right")
        table.add_row(
            "random init" + (" (features from the cache)" if self.initial_from_cache else ""),
            f"{100 * self.results['top1_init']:.2f}",
        )
        table.add_row(
            f"pretrained ({trainer.current_epoch} epochs, {trainer.global_step} steps)",
            f"{100 * self.results['top1_trained']:.2f}",
        )
        console = Console()
        console.print(table)
        console.print(f"kNN report: {time.perf_counter() - start:.1f} s", highlight=False, soft_wrap=True)
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

    def _cache_and_key(self, pl_module, datamodule, pool: str) -> tuple[ProbeCache | None, str]:
        """The cache of the initial encoder's features and their key; no cache without a ``cache_dir``
        or for a data module that does not describe its data (see :func:`data_description`)."""
        data = data_description(datamodule)
        if self.cache_dir is None or data is None:
            return None, ""
        normalize = pl_module.normalize
        spec = {
            "encoder": type(_backbone(pl_module)).__name__,
            "mean": normalize.mean.flatten().tolist(),
            "std": normalize.std.flatten().tolist(),
        }
        folder = default_cache_folder() if self.cache_dir == "auto" else Path(self.cache_dir)
        return ProbeCache(folder), ProbeCache.features_key(
            weights_digest(self.initial_state), spec, pool, data
        )


def _backbone(pl_module):
    """The network a method declares for evaluation (``backbone``; the encoder otherwise)."""
    return getattr(pl_module, "backbone", None) or pl_module.encoder
