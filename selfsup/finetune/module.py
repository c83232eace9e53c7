"""``FineTune``: a pretrained backbone + a task (head, loss, augmentation, metrics) + a strategy,
trained on labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import Metric

from selfsup.augment import CropFlipConfig
from selfsup.contract import (
    CheckpointMeta,
    ModelSpec,
    as_config,
    load_checkpoint,
    model_arguments,
    model_weights,
    plain,
    read_meta,
)
from selfsup.data.decode import batch_images
from selfsup.encoders import default_pool, is_vit
from selfsup.finetune.backbone import dense_output, pool_output
from selfsup.finetune.strategies import STRATEGIES, Strategy, get_strategy
from selfsup.finetune.tasks import TASKS
from selfsup.finetune.tasks.detection import DetectorConfig
from selfsup.load import declared_record, load_encoder
from selfsup.module import SelfSupModule
from selfsup.optim import OptimConfig

TaskName = Literal["classification", "segmentation", "detection"]


class FineTune(SelfSupModule):
    """Adapt a backbone to a labelled task.

    Args:
        backbone: a selfsup export folder or checkpoint (the pretrained backbone), a ``local-dir:``
            timm folder, or any timm model name (ViT or CNN, e.g. ``resnet50``; randomly initialised).
        num_classes: classes of the task.
        task: ``classification`` (batches of images and labels), ``segmentation`` (images and
            masks of class indices, 255 = ignore) or ``detection`` (images and lists of box targets,
            ``selfsup.data.detection.DetectionDataModule``; ViT backbones and the strategies ``full``,
            ``lora`` and ``linear``); see ``selfsup.finetune.tasks``.
        strategy: ``linear``, ``full``, ``partial``, ``bitfit``, ``lora``, ``adapter``, ``prompt``, or a
            configured one (``class_path: selfsup.finetune.LoRA`` with ``init_args: {rank: 4}``).
        head: classification head, ``linear`` or ``mlp`` (``head_hidden_dim`` wide).
        pool: features for classification, ``token`` or ``avg`` (None: the pretraining method's
            default for a selfsup backbone, else the class token where there is one).
        img_size, patch_size: for a ViT name only (the CLI links ``img_size`` to ``data.image_size``).
        backbone_kwargs: further timm arguments, e.g. ``drop_path_rate`` (0.1 is MAE's for ViT-B).
        mixup, cutmix: alphas of timm's Mixup (0 disables); classification only.
        label_smoothing: label smoothing of the cross entropy.
        augment: random resized crop and flip on the device (detection: applied to the boxes too;
            keep most of the image there, e.g. ``crop_scale: [0.25, 1.0]``).
        detector: detection only: the pyramid, the torchvision detector and its post-processing
            (``selfsup.finetune.tasks.detection.DetectorConfig``).
        optim: optimiser and schedule; ``lr = base_lr * global_batch / 256``. Strategy ``full``
            multiplies it per layer (layer-wise decay).
        skip_nonfinite_steps: NaN / infinite-loss steps to skip before stopping (0: stop at the first).
        compile: compile the backbone and head with ``torch.compile``.
    """

    kind = "finetune"

    def __init__(
        self,
        backbone: str = "vit_tiny_patch16_224",
        num_classes: int = 10,
        task: TaskName = "classification",
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
        detector: DetectorConfig = DetectorConfig(),  # noqa: B008 (frozen dataclass)
        optim: OptimConfig = OptimConfig(base_lr=5e-4, weight_decay=0.05, warmup_epochs=5),
        skip_nonfinite_steps: int = 0,
        compile: bool = False,
    ) -> None:
        super().__init__()
        hparams = {k: plain(v) for k, v in locals().items() if k not in ("self", "__class__")}
        if isinstance(strategy, Strategy):
            hparams["strategy"] = {"name": strategy.name, **plain(strategy)}
        self.save_hyperparameters(hparams)
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}.")
        self.backbone_source = backbone
        self.encoder = load_encoder(
            backbone, img_size=img_size, patch_size=patch_size, **(backbone_kwargs or {})
        )
        self.encoder.train()
        self.strategy = get_strategy(strategy)
        self.pretrained_method, declared_pool = declared_record(backbone)
        self.pool = pool or (
            default_pool(self.encoder, declared_pool or "token") if is_vit(self.encoder) else "avg"
        )
        cfg = self.encoder.pretrained_cfg
        self.set_normalization(cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)))
        self.image_size = img_size or (
            self.encoder.patch_embed.img_size[0] if is_vit(self.encoder) else cfg["input_size"][-1]
        )
        self.spec = ModelSpec.from_model(self.encoder)  # before the strategy changes the module
        view = as_config(CropFlipConfig, augment)
        dim = self.encoder.num_features
        if task == "classification":
            self.task = TASKS[task](
                num_classes, dim, self.image_size, self.mean, self.std, head, head_hidden_dim,
                mixup, cutmix, label_smoothing, view,
            )  # fmt: skip
        else:
            if mixup > 0 or cutmix > 0:
                raise ValueError("mixup / cutmix apply to classification only.")
            if task == "detection":
                self.task = TASKS[task](
                    num_classes, self.encoder, self.image_size, self.mean, self.std, view,
                    as_config(DetectorConfig, detector),
                )  # fmt: skip
            else:
                self.task = TASKS[task](num_classes, dim, self.image_size, self.mean, self.std, 0.0, view)
        self.task.check_strategy(self.strategy.name)
        if self.task.host_targets:
            # set on the instance, not overridden in the class: Lightning warns about every
            # overridden transfer hook, and classification and segmentation need none
            self.transfer_batch_to_device = self._transfer_images_only
        self.strategy.apply(self.encoder)
        self.optim = as_config(OptimConfig, optim)
        self.compile_model = compile
        self.set_guard(skip_nonfinite_steps)

    # --- convenience views of the task ----------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    @property
    def head(self) -> nn.Module:
        return self.task.head

    @property
    def task_name(self) -> str:
        return self.task.name

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
        super().setup(stage)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None) if datamodule is not None else None
        if data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"the data has {data_classes} classes but the {self.task.name} head has num_classes={self.num_classes}: "
                f"set model.init_args.num_classes: {data_classes}."
            )
        names = getattr(datamodule, "classes", None) if datamodule is not None else None
        if names and hasattr(self.task, "class_names"):  # detection records them for its export
            self.task.class_names = [str(n) for n in names]

    def on_fit_start(self) -> None:
        if not self.trainer.is_global_zero:
            return
        from rich.console import Console
        from rich.table import Table

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

    def trainable_groups(self) -> list[dict]:
        groups = self.strategy.param_groups(self.encoder, self.optim.weight_decay)
        head = [(n, p) for n, p in self.task.named_parameters() if p.requires_grad]
        groups += [
            {
                "params": [p for _, p in head if p.ndim > 1],
                "weight_decay": self.optim.weight_decay,
                "decay": True,
            },
            {"params": [p for _, p in head if p.ndim <= 1], "weight_decay": 0.0, "decay": False},
        ]
        return [g for g in groups if g["params"]]

    def compile_targets(self) -> list[nn.Module]:
        return [self.encoder, self.task.head]

    # --- forward ---------------------------------------------------------------------------------

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """What the task's head reads: pooled ``[B, D]`` or dense ``[B, D, h, w]`` features."""
        out, prefix = self.strategy.encode(self.encoder, images)
        if self.task.features == "pooled":
            return pool_output(self.encoder, out, prefix, self.pool)
        grid = tuple(self.encoder.patch_embed.grid_size) if is_vit(self.encoder) else None
        return dense_output(out, prefix, grid)

    def forward(self, images: torch.Tensor, targets: Any = None) -> Any:
        """Normalised images → the task's outputs (class logits ``[B, C]``, pixel logits ``[B, C, H, W]``).

        Detection takes [0, 1] images (its detector normalises them) and returns detections
        ``[{"boxes", "scores", "labels"}]``; in training mode, given the ``targets``, its loss dict."""
        features = images if self.task.features == "images" else self.backbone_features(images)
        if targets is None:
            return self.task(features, images)
        return self.task(features, images, targets)

    @property
    def predict_boxes(self):
        """Detection only: ``predict_boxes(uint8 images [B, 3, S, S]) -> [{"boxes", "scores", "labels"}]``
        in the images' pixels, in eval mode (what ``selfsup.eval.detection.DetectionGrid`` calls). Other
        tasks have no such attribute."""
        method = getattr(self.task, "predict_boxes", None)
        if method is None:
            raise AttributeError(f"predict_boxes: the {self.task.name} task does not predict boxes.")
        return method

    def _transfer_images_only(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """``transfer_batch_to_device`` of tasks with ``host_targets`` (detection): the images go to the
        device, the targets stay on the host; the task augments the boxes there (reading how many
        survive is then free) and sends them itself, non-blocking."""
        images, targets = batch
        return super().transfer_batch_to_device(images, device, dataloader_idx), targets

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch[0], batch[1]
        images = batch_images(images, self.image_size, self.device)  # decodes where data.decode is gpu
        if self._trainer is not None and self._trainer.training:
            return self.task.train_batch(images, targets)
        return self.task.eval_batch(images, targets, self.normalize)

    # --- steps -----------------------------------------------------------------------------------

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        outputs = self(images, targets) if self.task.needs_targets else self(images)
        loss = self.guard(self.task.loss(outputs, targets))
        self.log_step(loss, len(images), **self.task.train_logs(outputs))
        return loss

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        images, targets = batch
        values = self.task.update(self(images), targets)
        for name, value in values.items():
            if isinstance(value, Metric):
                self.log(name, value, on_epoch=True, prog_bar=name != "val/loss", batch_size=len(images))
            else:
                self.log(name, value, on_epoch=True, batch_size=len(images), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        values = self.task.epoch_end() or {}  # tasks whose metrics are computed once per epoch (detection)
        for name, value in values.items():
            self.log(name, value, prog_bar=name.endswith("map_50"))

    def on_fit_end(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero or trainer.logger is None or not trainer.log_dir:
            return  # no logger: no run folder, and nothing is written into the working directory
        classes = getattr(trainer.datamodule, "classes", None) or [str(i) for i in range(self.num_classes)]
        self.task.save_pictures(
            Path(trainer.log_dir), classes, f"{self.task.name}, strategy {self.strategy.name}"
        )

    # --- checkpoints -----------------------------------------------------------------------------

    def checkpoint_meta(self) -> CheckpointMeta:
        task = self.task.record()
        task["strategy"] = {"name": self.strategy.name, **plain(self.strategy)}
        task["backbone_transform"] = self.strategy.backbone_transform()
        return CheckpointMeta(
            kind="finetune",
            method="finetune",
            backbone=self.spec,
            backbone_prefix="encoder.",
            pool=self.pool,
            mean=self.mean,
            std=self.std,
            task=task,
            pretrained_from=str(self.backbone_source),
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> FineTune:
        """Rebuild a fine-tuned model from its checkpoint alone (the architecture from the checkpoint's
        metadata, no pretrained weights fetched), with its trained weights, in eval mode."""
        checkpoint = load_checkpoint(path)
        meta = read_meta(checkpoint, path).require(path, kind="finetune")
        hparams = model_arguments(checkpoint)
        spec = meta.backbone
        record = dict(meta.task["strategy"])
        name = record.pop("name")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
        module = cls(
            backbone=spec.name,
            num_classes=meta.task["num_classes"],
            task=meta.task["name"],
            strategy=STRATEGIES[name](**fields),
            head=meta.task.get("head", hparams.get("head", "linear")),
            head_hidden_dim=hparams.get("head_hidden_dim", 512),
            pool=meta.pool,
            img_size=spec.img_size,
            patch_size=spec.patch_size,
            backbone_kwargs=dict(spec.model_args),
            **({"detector": meta.task["detector"]} if "detector" in meta.task else {}),
        )
        module.set_normalization(meta.mean, meta.std)
        module.load_state_dict(model_weights(checkpoint))
        if meta.task.get("classes") and hasattr(module.task, "class_names"):
            module.task.class_names = list(meta.task["classes"])
        return module.eval()
