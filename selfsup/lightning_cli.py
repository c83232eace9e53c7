"""selfsup's LightningCLI: its defaults, where a run writes, and turning errors into one line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from selfsup._lightning import throttle_sigterm_broadcast
from selfsup.checkpoint import ExactResume
from selfsup.cli import PROGRESS_REFRESH_STEPS, RUN_ROOT

SIGTERM_CHECK_STEPS = 20


class ThrottledSigtermCheck(Callback):
    """Under DDP, Lightning broadcasts rank 0's SIGTERM flag and reads it on the host before every
    batch: a host sync and a barrier per step. This makes it every ``every`` steps (a SIGTERM is
    then acted on within that many steps; schedulers give minutes of grace)."""

    def __init__(self, every: int = SIGTERM_CHECK_STEPS) -> None:
        self.every = every

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            throttle_sigterm_broadcast(trainer, self.every)


class SelfSupCLI(LightningCLI):
    """LightningCLI with selfsup's defaults: a ``checkpoint`` section (``last.ckpt`` and the best
    checkpoint by the monitored metric), the image size set once in ``data`` and linked to the model,
    CSV logs under ``runs/`` (or under ``--trainer.default_root_dir``), atomic checkpoint writes, exact
    resume, a progress bar that reads the device every few steps only."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.monitor": "train/loss_epoch",
                "checkpoint.mode": "min",
                "checkpoint.filename": "best-{epoch:03d}-{step:06d}",
                "checkpoint.save_top_k": 1,
            }
        )
        # one image size for data, augmentation and encoder (a model without img_size ignores it)
        parser.link_arguments("data.init_args.image_size", "model.init_args.img_size")

    def _instantiate_trainer(self, config: dict, callbacks: list) -> L.Trainer:
        # `trainer.enable_checkpointing: false` turns off the checkpoint section's ModelCheckpoint too
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        configured = list(config.get("callbacks") or [])
        # The progress bar reads the logged values (a host sync on a GPU) only when it refreshes.
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in [*configured, *callbacks]
        ):
            callbacks = [*callbacks, TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS)]
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        self._follow_default_root_dir(config)
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            self._resolve_last(config)

    @staticmethod
    def _loggers(config) -> list:
        logger = config.trainer.logger
        if isinstance(logger, (list, tuple)):
            return list(logger)
        return [logger] if logger not in (None, True, False) else []

    def _follow_default_root_dir(self, config) -> None:
        """``--trainer.default_root_dir DIR`` decides where a run writes: loggers whose ``save_dir`` is
        the configs' ``runs`` move under DIR (checkpoints and config.yaml follow the logger)."""
        root = config.trainer.default_root_dir
        if not root:
            return
        for logger in self._loggers(config):
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and getattr(init_args, "save_dir", None) in (
                RUN_ROOT,
                f"./{RUN_ROOT}",
                None,
            ):
                init_args.save_dir = str(root)

    def _resolve_last(self, config) -> None:
        """``fit --ckpt_path last`` resumes from the newest ``last.ckpt`` of this config's runs
        (``<save_dir>/<name>/version_*/checkpoints/last.ckpt``). The resumed run logs to a new
        version folder, so nothing of the interrupted one is overwritten."""
        loggers = self._loggers(config)
        init_args = getattr(loggers[0], "init_args", None) if loggers else None
        save_dir = getattr(init_args, "save_dir", None) or config.trainer.default_root_dir or "."
        name = getattr(init_args, "name", None) or "lightning_logs"
        run_root = Path(save_dir) / name
        found = [
            p for p in run_root.glob("version_*/checkpoints/last.ckpt") if p.parent.parent.name[8:].isdigit()
        ]
        if not found:
            raise FileNotFoundError(
                f"--ckpt_path last: no checkpoint to resume under '{run_root}/version_*/checkpoints/last.ckpt'. "
                "Start without --ckpt_path, or pass a checkpoint file."
            )
        latest = max(found, key=lambda p: int(p.parent.parent.name[8:]))
        print(f"resuming from {latest}")
        config.ckpt_path = str(latest)


def trainer_defaults() -> dict:
    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": RUN_ROOT, "name": "default"},
        },
        "plugins": [{"class_path": "selfsup.checkpoint.AtomicCheckpointIO"}],
        # appended to the config's callbacks (instances, as LightningCLI expects): random states and
        # data position in checkpoints for exact resume; the DDP SIGTERM check every few steps
        "callbacks": [ExactResume(), ThrottledSigtermCheck()],
    }


def cli_arguments(args: Sequence[str] | None) -> dict[str, Any]:
    # fine-tuning strategies are dataclasses chosen by class_path (selfsup.finetune.LoRA, ...)
    from jsonargparse import set_parsing_settings

    from selfsup.finetune.strategies import Strategy

    set_parsing_settings(subclasses_enabled=[Strategy])
    return {
        "model_class": L.LightningModule,
        "datamodule_class": L.LightningDataModule,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "trainer_defaults": trainer_defaults(),
        "save_config_kwargs": {"overwrite": True},
        # parse errors are raised, and `selfsup` prints them as one line (see parser_error)
        "parser_kwargs": {"exit_on_error": False},
        "auto_configure_optimizers": False,
        "args": None if args is None else list(args),
    }


def parser_error(err: Exception) -> str:
    """jsonargparse's multi-line error (the union of every subtype it tried, the value given) as the
    one line a user needs: what is wrong, where, and a suggestion when a name is misspelt."""
    import difflib
    import re

    text = str(err)
    unknown = re.search(r"Option '([^']+)' is not accepted", text)
    klass = re.search(r"Problem with given class_path '([^']+)'", text)
    key = re.search(r'Parser key "([^"]+)"', text)
    if unknown and klass:
        option, class_path = unknown.group(1), klass.group(1)
        names = _init_arguments(class_path)
        close = difflib.get_close_matches(option, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        section = key.group(1) if key else "model"
        return (
            f"{section}.init_args.{option}: {class_path} has no argument '{option}'.{hint} "
            f"`selfsup fit --{section}.help {class_path}` lists its arguments."
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [
        line
        for line in lines
        if not line.startswith(("Subtypes:", "Errors:", "Given value type", "- Expected a"))
    ]
    return " ".join(useful[:4]) if useful else text


def _init_arguments(class_path: str) -> list[str]:
    """Constructor argument names of a class and of the base classes its ``**kwargs`` reach."""
    import importlib
    import inspect

    module, name = class_path.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        names += [p for p in inspect.signature(init).parameters if p not in ("self", "args", "kwargs")]
    return names
