"""Monitoring during pretraining, both optional and off the hot path when not configured:
an online linear probe on detached features, and a kNN monitor on the held-out split."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from selfsup import distributed
from selfsup.eval.callbacks import encoder_knn_top1


class OnlineLinearProbe(Callback):
    """Trains a linear classifier on the detached encoder features of each labelled training batch
    and logs its accuracy (``probe/train_top1``) and loss (``probe/train_loss``).

    The probe has its own optimiser and its loss is never added to the self-supervised loss: the
    features are detached, so no gradient reaches the encoder and ``train/loss`` is exactly the
    loss the encoder optimises. Under DDP the features and labels of all processes are gathered, so
    every process trains the same probe. Samples with label < 0 are ignored.

    Features come from the method's training step when it returns them (SimCLR: the first view's,
    at no extra cost); otherwise (MAE, whose encoder sees only the visible patches) from an extra
    no-grad forward of the augmented view.

    Args:
        num_classes: classes of the probe (None: the datamodule's ``num_classes``).
        lr: AdamW learning rate of the probe.
        weight_decay: AdamW weight decay of the probe.
    """

    def __init__(self, num_classes: int | None = None, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.head: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.head is not None:
            return
        num_classes = self.num_classes or getattr(trainer.datamodule, "num_classes", None)
        if not num_classes:
            raise ValueError("OnlineLinearProbe needs num_classes (the datamodule has no num_classes).")
        with torch.random.fork_rng(devices=[]):  # adding a monitor must not change training's random stream
            torch.manual_seed(0)
            backbone = getattr(pl_module, "backbone", None) or pl_module.encoder
            self.head = nn.Linear(backbone.num_features, num_classes)
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        views, labels = batch[0], batch[1]
        features = outputs.get("features") if isinstance(outputs, dict) else None
        if features is None:
            view = views[0] if isinstance(views, (tuple, list)) else views
            with torch.no_grad():
                features = pl_module.features(view)
        features = distributed.gather_no_grad(features.detach().float())
        labels = distributed.gather_no_grad(labels)
        labelled = (labels >= 0).float()
        count = labelled.sum().clamp_min(1.0)
        if self.head.weight.device != features.device:
            self.head.to(features.device)
            self.optimizer.load_state_dict(self.optimizer.state_dict())  # moves the state along
        # Unlabelled samples (label < 0) are masked out arithmetically rather than by indexing with a
        # boolean mask: no data-dependent shapes, so nothing here waits for the device.
        with torch.enable_grad():
            logits = self.head(features)
            per_sample = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
            loss = (per_sample * labelled).sum() / count
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        top1 = ((logits.argmax(1) == labels).float() * labelled).sum() / count
        pl_module.log("probe/train_loss", loss.detach(), on_step=True, on_epoch=True, batch_size=len(labels))
        pl_module.log(
            "probe/train_top1",
            top1.detach(),
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(labels),
        )

    def state_dict(self) -> dict[str, Any]:
        if self.head is None:
            return {}
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.head is None:  # restored before setup: apply once the head exists
            self._pending_state = state_dict
            return
        self.head.load_state_dict(state_dict["head"])
        self.optimizer.load_state_dict(state_dict["optimizer"])


class KNNMonitor(Callback):
    """Every ``every_n_epochs``, kNN top-1 of the current encoder on the held-out split (bank: the
    un-augmented training split), logged as ``val/knn_top1`` (usable as ``checkpoint.monitor``).

    Computed on the first process and broadcast to the others.

    Args:
        every_n_epochs: how often.
        k, temperature: kNN neighbours and vote temperature.
        pool: feature pooling (None: the method's default).
        max_train_samples: a fixed random subset of the training split as the bank (None: all).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        k: int = 20,
        temperature: float = 0.07,
        pool: str | None = None,
        max_train_samples: int | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError("every_n_epochs must be >= 1.")
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.pool = pool
        self.max_train_samples = max_train_samples
        self.history: list[tuple[int, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or trainer.datamodule is None:
            return
        value = torch.tensor(float("nan"), device=pl_module.device)
        if trainer.is_global_zero:
            value.fill_(
                encoder_knn_top1(
                    pl_module,
                    trainer.datamodule,
                    self.k,
                    self.temperature,
                    self.pool or pl_module.default_pool,
                    max_train_samples=self.max_train_samples,
                )
            )
        value = trainer.strategy.broadcast(value, src=0)
        self.history.append((trainer.current_epoch, float(value)))
        pl_module.log("val/knn_top1", value, on_step=False, on_epoch=True, prog_bar=True)
