"""selfsup's LightningCLI: its defaults, where a run writes, and turning errors into one line."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from selfsup._lightning import (
    EpochEndProgressBar,
    ModelSummaryWithoutFlops,
    RunCheckpoint,
    throttle_sigterm_broadcast,
)
from selfsup.checkpoint import ExactResume
from selfsup.contract import (
    CheckpointError,
    load_checkpoint,
    model_arguments,
    model_weights,
    read_meta,
    set_model_weights,
)
from selfsup.eval.collapse import CollapseWarning
from selfsup.settings import PROGRESS_REFRESH_STEPS, RUN_ROOT

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


KNN_MONITOR = "val/knn_top1"


class RemoveEmptyRunOnFailure(Callback):
    """A run that fails before it has written a checkpoint or a logged value leaves no
    ``version_<n>`` folder behind (holding only ``config.yaml``, it would be picked by nothing and
    would shift the next run's number). Only the files a run writes at its start are removed, and a
    folder only once empty: nothing else is ever deleted."""

    START_FILES = ("config.yaml", "hparams.yaml", "metrics.csv")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) or not trainer.is_global_zero or trainer.log_dir is None:
            return
        run = Path(trainer.log_dir)
        if not run.is_dir() or any(run.rglob("*.ckpt")):
            return
        metrics = run / "metrics.csv"
        if metrics.is_file() and len(metrics.read_text().splitlines()) > 1:
            return  # values were logged: keep them
        for name in self.START_FILES:
            (run / name).unlink(missing_ok=True)
        for folder in sorted((p for p in run.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # empty folders only
        with contextlib.suppress(OSError):
            run.rmdir()


class SelfSupCLI(LightningCLI):
    """LightningCLI with selfsup's defaults: a ``checkpoint`` section (``last.ckpt``, always the
    run's latest state, and a best checkpoint only by a monitor that means "better"), the image size
    set once in ``data`` and linked to the model, CSV logs under ``runs/`` (or under
    ``--trainer.default_root_dir``), atomic checkpoint writes, exact resume, checked ``--ckpt_path``,
    a progress bar that reads the device every few steps only."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        # A method's loss says nothing of its encoder's quality (DINO's plateaus or rises as the
        # teacher sharpens, MAE's depends on the mask), so no "best" is kept by default: last.ckpt
        # only, or the best by kNN where a KNNMonitor runs (see _checkpoint_defaults).
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.monitor": None,
                "checkpoint.mode": "min",
                "checkpoint.filename": None,
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
            callbacks = [*callbacks, EpochEndProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS)]
        if config.get("enable_model_summary", True) is not False and not any(
            isinstance(c, ModelSummary) for c in [*configured, *callbacks]
        ):
            callbacks = [*callbacks, ModelSummaryWithoutFlops()]
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        self._follow_default_root_dir(config)
        self._checkpoint_defaults(config)

    @staticmethod
    def _checkpoint_defaults(config) -> None:
        """Without a ``checkpoint.monitor``: monitor the kNN accuracy (``val/knn_top1``, max) where
        the config runs a ``KNNMonitor``; otherwise keep ``last.ckpt`` only (``save_top_k: 1`` with
        no monitor would keep a second copy of the latest checkpoint). File names say ``best-`` only
        for checkpoints chosen by a monitor."""
        section = config.get("checkpoint")
        if section is None:
            return
        if section.monitor is None:
            callbacks = config.trainer.get("callbacks") or []
            names = [str(getattr(c, "class_path", type(c).__name__)) for c in callbacks]
            if any(name.rsplit(".", 1)[-1] == "KNNMonitor" for name in names):
                section.monitor, section.mode = KNN_MONITOR, "max"
            elif section.save_top_k == 1:
                section.save_top_k = 0
        if section.filename is None:
            section.filename = "best-{epoch:03d}-{step:06d}" if section.monitor else "{epoch:03d}-{step:06d}"

    # --- --ckpt_path -------------------------------------------------------------------------------

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path``: ``last`` is resolved to the newest run's ``last.ckpt`` (fit); a file is
        read through the checkpoint contract, so a truncated file, a file that is not a selfsup
        checkpoint, or a checkpoint of another method ends with one line naming the file and the fix;
        then, as LightningCLI does, the model's arguments are taken from the checkpoint, so the
        resumed model has the checkpoint's shape (a continual run's frozen start encoder included)."""
        self._resume: tuple[Path, dict] | None = None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path:
            return
        if subcommand == "fit" and ckpt_path == "last":
            self._follow_default_root_dir(config)
            self._resolve_last(config)
            ckpt_path = config.ckpt_path
        if ckpt_path in ("last", "best", "hpc") or str(ckpt_path).startswith("registry"):
            return  # Lightning's own keywords (a checkpoint of this trainer's callbacks)
        path = Path(ckpt_path)
        if not path.exists():
            raise FileNotFoundError(
                f"--ckpt_path: checkpoint '{path}' does not exist. Pass a .ckpt file of a run "
                "(runs/<name>/version_<n>/checkpoints/last.ckpt), or `--ckpt_path last` for the newest run of this config."
            )
        checkpoint = load_checkpoint(path, mmap=True)
        meta = read_meta(checkpoint, path)
        self._check_method(config, meta, path)
        self._resume = (path, checkpoint)
        hparams = model_arguments(checkpoint)
        hparams.pop("_instantiator", None)
        class_path = hparams.pop("_class_path", None) or config.model.class_path
        if hparams:
            model = {"class_path": class_path, "init_args": hparams}
            before = _flat(config.model.get("init_args"))
            try:
                self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)
            except ArgumentError:
                # arguments recorded in a form the parser does not take back (a fine-tune strategy
                # without its class_path): keep the config's; before_fit checks that the weights fit
                return
            after = _flat(self.config[subcommand].model.get("init_args"))
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            if changed:
                shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
                print(
                    f"resuming with the model arguments recorded in '{path}'; they differ from the config in: {shown}"
                )

    @staticmethod
    def _check_method(config, meta, path: Path) -> None:
        import importlib

        class_path = str(getattr(config.model, "class_path", "") or "")
        module_name, _, name = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError):
            return  # the model section itself is wrong: instantiating it reports that
        expected = getattr(cls, "method", "") or (
            "finetune" if getattr(cls, "kind", "") == "finetune" else ""
        )
        if expected and meta.method != expected:
            raise CheckpointError(
                f"'{path}' is a {meta.method} checkpoint, but this config trains {class_path} ({expected}). "
                f"Resume it with the config of the run that wrote it: {_resume_command(path)}"
            )

    def before_fit(self) -> None:
        """Before anything is written: the checkpoint to resume must fit the model this config built
        (its weights' names and shapes), else one line naming the file and the config that fits."""
        if getattr(self, "_resume", None) is None:
            return
        path, checkpoint = self._resume
        self._resume = None
        probe = dict(checkpoint)
        set_model_weights(probe, dict(model_weights(checkpoint)))
        self.model.on_load_checkpoint(probe)  # what resuming does first (upgrades, a teacher's weights)
        model = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in model_weights(probe).items()}
        extra = sorted(set(found) - set(model))
        missing = sorted(set(model) - set(found))
        reshaped = sorted(k for k in set(model) & set(found) if model[k] != found[k])
        if extra or missing or reshaped:
            parts = [
                f"{len(keys)} {what} ({', '.join(_prefixes(keys))})"
                for keys, what in (
                    (extra, "weights this model lacks"),
                    (missing, "missing weights"),
                    (reshaped, "weights of other shapes"),
                )
                if keys
            ]
            raise CheckpointError(
                f"'{path}' does not fit the model this config builds: it has {'; '.join(parts)}. It was "
                f"trained with other model settings; resume it with the config of the run that wrote it: "
                f"{_resume_command(path)}"
            )

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


def _flat(value, prefix: str = "") -> dict[str, object]:
    """A nested config (namespaces, dicts) as ``{"a.b": leaf}``, to compare two of them."""
    if value is not None and hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): list(value) if isinstance(value, tuple) else value}


def _resume_command(path: Path) -> str:
    config = path.parent.parent / "config.yaml"
    if config.is_file():
        return f"selfsup fit -c {config} --ckpt_path {path}"
    return f"selfsup fit -c <that run's config.yaml> --ckpt_path {path}"


def _prefixes(keys: list[str], limit: int = 3) -> list[str]:
    """``['start_encoder.*', 'head.*']``: the first components of state-dict names, for a message."""
    seen: list[str] = []
    for key in keys:
        head = key.split(".", 1)[0] + (".*" if "." in key else "")
        if head not in seen:
            seen.append(head)
    return seen[:limit] + (["..."] if len(seen) > limit else [])


def trainer_defaults() -> dict:
    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": RUN_ROOT, "name": "default"},
        },
        "plugins": [{"class_path": "selfsup.checkpoint.AtomicCheckpointIO"}],
        # appended to the config's callbacks (instances, as LightningCLI expects): random states and
        # data position in checkpoints for exact resume; the DDP SIGTERM check every few steps; a
        # warning when a method's teacher entropy sits at its maximum (uniform-teacher collapse)
        "callbacks": [ExactResume(), ThrottledSigtermCheck(), RemoveEmptyRunOnFailure(), CollapseWarning()],
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
