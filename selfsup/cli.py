"""The ``selfsup`` command.

``selfsup probe CKPT|RUN_DIR ...`` and ``selfsup export CKPT --out DIR`` evaluate and export
checkpoints (see ``selfsup.commands``).

``selfsup fit|validate|test|predict -c CONFIG [--section.key value ...]`` is LightningCLI: every
typed constructor argument of the model, the data and the trainer is settable from YAML or the
command line, ``--print_config`` shows the resolved configuration, and the resolved configuration is
saved as ``config.yaml`` beside the logs of every run.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from selfsup.checkpoint import ExactResume

RUN_ROOT = "runs"


class SelfSupCLI(LightningCLI):
    """LightningCLI with selfsup's defaults: a ``checkpoint`` section (``last.ckpt`` and the best
    checkpoint by the monitored metric), the image size set once in ``data`` and linked to the model,
    CSV logs under ``runs/``, and atomic checkpoint writes."""

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
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        """``fit --ckpt_path last`` resumes from the newest ``last.ckpt`` of this config's runs
        (``<save_dir>/<name>/version_*/checkpoints/last.ckpt``). The resumed run logs to a new
        version folder, so nothing of the interrupted one is overwritten."""
        if self.subcommand != "fit" or self.config["fit"].get("ckpt_path") != "last":
            return
        config = self.config["fit"]
        logger = config.trainer.logger
        init_args = getattr(logger, "init_args", None)
        save_dir = getattr(init_args, "save_dir", None) or config.trainer.default_root_dir or "."
        name = getattr(init_args, "name", None) or "lightning_logs"
        run_root = Path(save_dir) / name
        found = [
            p for p in run_root.glob("version_*/checkpoints/last.ckpt") if p.parent.parent.name[8:].isdigit()
        ]
        if not found:
            raise SystemExit(
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
        # data position in checkpoints, for exact resume
        "callbacks": [ExactResume()],
    }


def lightning_main(args: Sequence[str] | None = None) -> LightningCLI:
    """LightningCLI's subcommands; ``args=None`` reads ``sys.argv``."""
    # augmentation lives in the module's on_after_batch_transfer by design; SSL methods have no validation_step
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", message=".*`val_dataloader` but have no `validation_step`.*")
    # fine-tuning strategies are dataclasses chosen by class_path (selfsup.finetune.LoRA, ...)
    from jsonargparse import set_parsing_settings

    from selfsup.finetune.strategies import Strategy

    set_parsing_settings(subclasses_enabled=[Strategy])
    try:
        return SelfSupCLI(
            model_class=L.LightningModule,
            datamodule_class=L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults=trainer_defaults(),
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=None if args is None else list(args),
        )
    except SIGTERMException:
        # ExactResume saved last.ckpt after the step in progress: a clean, resumable stop
        print(
            "selfsup: stopped on SIGTERM after saving last.ckpt; resume with --ckpt_path last",
            file=sys.stderr,
        )
        raise SystemExit(0) from None


def _probe(args: Sequence[str]) -> object:
    from selfsup.commands import probe_command

    return probe_command(args)


def _export(args: Sequence[str]) -> object:
    from selfsup.commands import export_command

    return export_command(args)


def _data(args: Sequence[str]) -> object:
    from selfsup.commands import data_command

    return data_command(args)


COMMANDS: dict[str, Callable[[Sequence[str]], object]] = {"probe": _probe, "export": _export, "data": _data}


def run(argv: Sequence[str] | None = None) -> object:
    """Run a ``selfsup`` subcommand and return what it built (the LightningCLI, a report...)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        return COMMANDS[args[0]](args[1:])
    return lightning_main(None if argv is None else args)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``selfsup`` console script (exit status 0 unless an error is raised)."""
    run(argv)


if __name__ == "__main__":
    main()
