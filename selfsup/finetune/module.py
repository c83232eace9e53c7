"""``FineTune``: a pretrained backbone + a task head + a strategy, trained on labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

from selfsup.augment import CropFlipAugment, CropFlipConfig, Normalize, SegmentationAugment
from selfsup.encoders import default_pool
from selfsup.finetune.backbone import backbone_spec, dense_output, is_vit, load_backbone, pool_output
from selfsup.finetune.strategies import Strategy, get_strategy
from selfsup.guard import guard_loss
from selfsup.heads import ClassificationHead, SegmentationHead
from selfsup.methods.base import CHECKPOINT_FORMAT, CHECKPOINT_KEY, _plain, as_config
from selfsup.optim import OptimConfig, optimizer_and_schedule

IGNORE_INDEX = 255


class FineTune(L.LightningModule):
    """Adapt a backbone to a labelled task.

    Args:
        backbone: a selfsup export folder or training checkpoint (the pretrained encoder), a
            ``local-dir:`` timm folder, or any timm model name (ViT or CNN, e.g. ``resnet50``;
            randomly initialised).
        num_classes: classes of the task.
        task: ``classification`` (batches of images and labels) or ``segmentation`` (images and
            masks of class indices, 255 = ignore).
        strategy: ``linear``, ``full``, ``partial``, ``bitfit``, ``lora``, ``adapter``, ``prompt``, or a
            configured one (``class_path: selfsup.finetune.LoRA`` with ``init_args: {rank: 4}``).
        head: classification head, ``linear`` or ``mlp`` (``head_hidden_dim`` wide).
        pool: features for classification, ``token`` or ``avg`` (None: the pretraining method's
            default for a selfsup backbone, else the class token where there is one).
        img_size, patch_size: for a ViT name only (the CLI links ``img_size`` to ``data.image_size``).
        backbone_kwargs: further timm arguments, e.g. ``drop_path_rate`` (0.1 is MAE's for ViT-B).
        mixup, cutmix: alphas of timm's Mixup (0 disables); classification only.
        label_smoothing: label smoothing of the cross entropy.
        augment: random resized crop and flip on the device.
        optim: optimiser and schedule; ``lr = base_lr * global_batch / 256``. Strategy ``full``
            multiplies it per layer (layer-wise decay).
        skip_nonfinite_steps: NaN / infinite-loss steps to skip before stopping (0: stop at the first).
    """

    def __init__(
        self,
        backbone: str = "vit_tiny_patch16_224",
        num_classes: int = 10,
        task: Literal["classification", "segmentation"] = "classification",
        strategy: str | Strategy = "full",
        head: Literal["linear", "mlp"] = "linear",
        head_hidden_dim: int = 512,
        pool: Literal["token", "avg"] | None = None,
        img_size: int | None = None,
        patch_size: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        label_smoothing: float = 0.1,
        augment: CropFlipConfig = CropFlipConfig(),
        optim: OptimConfig = OptimConfig(base_lr=5e-4, weight_decay=0.05, warmup_epochs=5),
        skip_nonfinite_steps: int = 0,
    ) -> None:
        super().__init__()
        hparams = {k: _plain(v) for k, v in locals().items() if k not in ("self", "__class__")}
        if isinstance(strategy, Strategy):
            hparams["strategy"] = {"name": strategy.name, **_plain(strategy)}
        self.save_hyperparameters(hparams)
        if task not in ("classification", "segmentation"):
            raise ValueError(f"task must be 'classification' or 'segmentation', got {task!r}.")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.task = task
        self.num_classes = num_classes
        self.backbone_source = backbone
        self.encoder = load_backbone(backbone, img_size, patch_size, backbone_kwargs)
        self.strategy = get_strategy(strategy)
        self.strategy.apply(self.encoder)
        self.pretrained_method = _pretrained_method(backbone)
        self.pool = pool or (
            default_pool(self.encoder, self.pretrained_method) if is_vit(self.encoder) else "avg"
        )
        cfg = self.encoder.pretrained_cfg
        self.mean, self.std = (
            tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        )
        self.image_size = img_size or (
            self.encoder.patch_embed.img_size[0] if is_vit(self.encoder) else cfg["input_size"][-1]
        )
        self.normalize = Normalize(self.mean, self.std)
        dim = self.encoder.num_features
        view = as_config(CropFlipConfig, augment)
        if task == "classification":
            self.head = ClassificationHead(dim, num_classes, head, head_hidden_dim)
            self.train_augment = CropFlipAugment(self.image_size, self.mean, self.std, view)
            self.mixup = (
                Mixup(
                    mixup_alpha=mixup,
                    cutmix_alpha=cutmix,
                    label_smoothing=label_smoothing,
                    num_classes=num_classes,
                )
                if (mixup > 0 or cutmix > 0)
                else None
            )
            self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
            self.val_top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        else:
            if mixup > 0 or cutmix > 0:
                raise ValueError("mixup / cutmix apply to classification only.")
            self.head = SegmentationHead(dim, num_classes)
            self.train_augment = SegmentationAugment(self.image_size, self.mean, self.std, view)
            self.mixup = None
            self.val_miou = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE_INDEX, average="macro")
        self.label_smoothing = label_smoothing
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
        self.optim = as_config(OptimConfig, optim)
        self.skip_nonfinite_steps = skip_nonfinite_steps
        self.last_confusion: torch.Tensor | None = None

    # --- parameters ------------------------------------------------------------------------------

    def trainable_summary(self) -> dict[str, float]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        backbone = sum(p.numel() for p in self.encoder.parameters() if p.requires_grad)
        return {
            "trainable": trainable,
            "total": total,
            "share": trainable / total,
            "backbone_trainable": backbone,
        }

    def setup(self, stage: str) -> None:
        data_classes = (
            getattr(self.trainer.datamodule, "num_classes", None) if self.trainer.datamodule else None
        )
        if data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"the data has {data_classes} classes but the {self.task} head has num_classes={self.num_classes}: "
                f"set model.init_args.num_classes: {data_classes}."
            )

    @rank_zero_only
    def on_fit_start(self) -> None:
        s = self.trainable_summary()
        table = Table(title=f"Fine-tune strategy '{self.strategy.name}' on {type(self.encoder).__name__}")
        for col in ("trainable", "of which backbone", "total", "share"):
            table.add_column(col, justify="right")
        table.add_row(
            f"{s['trainable']:,}",
            f"{s['backbone_trainable']:,}",
            f"{s['total']:,}",
            f"{100 * s['share']:.2f}%",
        )
        Console().print(table)
        for logger in self.loggers:
            logger.log_hyperparams({"trainable_params": s["trainable"], "trainable_share": s["share"]})

    def train(self, mode: bool = True) -> FineTune:
        super().train(mode)
        if mode and self.strategy.backbone_eval:
            self.encoder.eval()  # linear probing: frozen BatchNorm statistics, no dropout
        return self

    def configure_optimizers(self) -> dict:
        groups = self.strategy.param_groups(self.encoder, self.optim.weight_decay)
        head = [(n, p) for n, p in self.head.named_parameters() if p.requires_grad]
        groups += [
            {"params": [p for _, p in head if p.ndim > 1], "weight_decay": self.optim.weight_decay},
            {"params": [p for _, p in head if p.ndim <= 1], "weight_decay": 0.0},
        ]
        return optimizer_and_schedule(self.trainer, self.optim, [g for g in groups if g["params"]])

    # --- forward ---------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images → class logits ``[B, C]`` or pixel logits ``[B, C, H, W]``."""
        out, prefix = self.strategy.encode(self.encoder, images)
        if self.task == "classification":
            return self.head(pool_output(self.encoder, out, prefix, self.pool))
        grid = tuple(self.encoder.patch_embed.grid_size) if is_vit(self.encoder) else None
        return self.head(dense_output(out, prefix, grid), images.shape[-2:])

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch[0], batch[1]
        if self._trainer is not None and self._trainer.training:
            if self.task == "segmentation":
                return self.train_augment(images, targets)
            images = self.train_augment(images)
            if self.mixup is not None:
                if len(images) % 2:
                    raise ValueError(
                        "mixup / cutmix need an even batch size: set data.batch_size to an even number."
                    )
                images, targets = self.mixup(images, targets)
            return images, targets
        return self.normalize(images), targets

    # --- steps -----------------------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "classification" and targets.ndim == 2:  # soft targets from mixup / cutmix
            return SoftTargetCrossEntropy()(logits, targets)
        return F.cross_entropy(
            logits, targets, label_smoothing=self.label_smoothing, ignore_index=IGNORE_INDEX
        )

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor | None:
        images, targets = batch
        loss = guard_loss(self, self.loss(self(images), targets), self.skip_nonfinite_steps)
        if loss is not None:
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        self.log(
            "val/loss",
            F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX),
            on_epoch=True,
            batch_size=len(images),
            sync_dist=True,
        )
        preds = logits.argmax(1)
        if self.task == "classification":
            self.val_top1.update(logits, targets)
            self.val_top5.update(logits, targets)
            self.log("val/top1", self.val_top1, on_epoch=True, prog_bar=True, batch_size=len(images))
            self.log("val/top5", self.val_top5, on_epoch=True, batch_size=len(images))
        else:
            self.val_miou.update(preds, targets)
            self.log("val/miou", self.val_miou, on_epoch=True, prog_bar=True, batch_size=len(images))
        self.confusion.update(preds, targets)

    def on_validation_epoch_end(self) -> None:
        self.last_confusion = self.confusion.compute().cpu()
        self.confusion.reset()

    def on_fit_end(self) -> None:
        if self.last_confusion is None or not self.trainer.is_global_zero:
            return
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        classes = getattr(self.trainer.datamodule, "classes", None) or [
            str(i) for i in range(self.num_classes)
        ]
        save_confusion_matrix(
            self.last_confusion,
            classes,
            folder / "confusion_matrix.png",
            title=f"{self.task}, strategy {self.strategy.name}",
        )

    # --- checkpoints -----------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> FineTune:
        """Rebuild a fine-tuned model from its checkpoint alone (the architecture from the checkpoint's
        metadata, no pretrained weights fetched), with its trained weights, in eval mode."""
        from selfsup.checkpoint import CheckpointError, load_checkpoint
        from selfsup.finetune.strategies import STRATEGIES

        checkpoint = load_checkpoint(path)
        meta = checkpoint[CHECKPOINT_KEY]
        if meta.get("method") != "finetune":
            raise CheckpointError(
                f"'{path}' is a {meta.get('method')} pretraining checkpoint, not a fine-tune "
                "checkpoint: export it with `selfsup export` or fine-tune from it."
            )
        hparams = checkpoint.get("hyper_parameters", {})
        spec = dict(meta["encoder"])
        args = dict(spec["model_args"])
        img_size = patch_size = None
        if spec.get("vit"):
            size = args.pop("img_size", None)
            img_size = size[0] if isinstance(size, list) else size
            patch_size = args.pop("patch_size", None)
        fields = {
            k: tuple(v) if isinstance(v, list) else v for k, v in meta["strategy"].items() if k != "name"
        }
        module = cls(
            backbone=spec["name"],
            num_classes=meta["num_classes"],
            task=meta["task"],
            strategy=STRATEGIES[meta["strategy"]["name"]](**fields),
            head=hparams.get("head", "linear"),
            head_hidden_dim=hparams.get("head_hidden_dim", 512),
            pool=meta["pool"],
            img_size=img_size,
            patch_size=patch_size,
            backbone_kwargs=args,
        )
        module.mean, module.std = tuple(meta["mean"]), tuple(meta["std"])
        module.normalize = Normalize(module.mean, module.std)
        module.load_state_dict(checkpoint["state_dict"])
        return module.eval()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "method": "finetune",
            "task": self.task,
            "num_classes": self.num_classes,
            "strategy": {"name": self.strategy.name, **_plain(self.strategy)},
            "encoder": backbone_spec(self.encoder),
            "head": {"kind": getattr(self.head, "kind", "segmentation")},
            "pool": self.pool,
            "mean": list(self.mean),
            "std": list(self.std),
            "img_size": self.image_size,
            "pretrained_from": str(self.backbone_source),
        }


def _pretrained_method(backbone: str) -> str | None:
    """The selfsup method an export folder or checkpoint was pretrained with, if it says."""
    import json

    path = Path(backbone)
    if path.is_dir() and (path / "selfsup.json").is_file():
        return json.loads((path / "selfsup.json").read_text()).get("method")
    if path.suffix == ".ckpt" and path.is_file():
        from selfsup.checkpoint import load_checkpoint

        return load_checkpoint(path)[CHECKPOINT_KEY].get("method")
    return None


def save_confusion_matrix(matrix: torch.Tensor, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: prediction) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.float()
    rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n), dpi=120)
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{100 * rates[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (% of each true class)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
