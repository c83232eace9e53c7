"""The ``selfsup`` command.

``selfsup fit|validate|test|predict -c CONFIG [--section.key value ...]`` is LightningCLI: every
typed constructor argument of the model, the data and the trainer is settable from YAML or the
command line, ``--print_config`` shows the resolved configuration, and the resolved configuration is
saved as ``config.yaml`` beside the logs of every run. The other subcommands (``COMMANDS``, one
module of :mod:`selfsup.commands` each) evaluate, export, compress and look at checkpoints and data.

Errors in what the user typed (a bad value, a missing file, a wrong checkpoint) end with one line,
``selfsup: error: ...``, and exit status 1 (2 for an unparsable command line); ``--debug`` or
``SELFSUP_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from selfsup.settings import PROGRESS_REFRESH_STEPS, RUN_ROOT

DEBUG_FLAG = "--debug"


class Command(NamedTuple):
    target: str  # "module:function" taking argv
    summary: str


# The registry of subcommands besides LightningCLI's, one module of selfsup.commands each: `selfsup --help`
# lists them from here.
COMMANDS: dict[str, Command] = {
    "probe": Command("selfsup.commands.probe:probe_command", "kNN and linear-probe accuracy of checkpoints"),
    "export": Command(
        "selfsup.commands.export:export_command", "write a checkpoint as a folder plain timm loads"
    ),
    "compress": Command(
        "selfsup.commands.compress:compress_command", "int8, pruned and ONNX versions of an export"
    ),
    "attention": Command(
        "selfsup.commands.attention:attention_command", "class-token attention maps as PNGs"
    ),
    "preview": Command(
        "selfsup.commands.preview:preview_command", "a PNG of the augmented views a config makes"
    ),
    "data": Command(
        "selfsup.commands.data:data_command", "data optimize: an ImageFolder as streaming chunks"
    ),
    "zeroshot": Command(
        "selfsup.commands.zeroshot:zeroshot_command", "zero-shot top-1 / top-5 of a CLIP checkpoint by text"
    ),
}
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a method or a fine-tune from a config (-c CONFIG)",
    "validate": "run the validation loop of a config",
    "test": "run the test loop of a config",
    "predict": "run the predict loop of a config",
}


def usage() -> str:
    from selfsup.methods import METHODS

    width = max(map(len, [*COMMANDS, *LIGHTNING_COMMANDS])) + 2
    names = ["selfsup." + entry.class_path.rsplit(".", 1)[1] for entry in METHODS.values()]
    method_width = max(map(len, [*names, "selfsup.FineTune"])) + 2  # a long class name keeps its gap
    lines = [
        "usage: selfsup COMMAND [ARGS]   (selfsup COMMAND --help for a command's options)",
        "",
        "Self-supervised pretraining of Vision Transformers on PyTorch Lightning.",
        "",
        "commands:",
        *(f"  {name:<{width}}{text}" for name, text in LIGHTNING_COMMANDS.items()),
        *(f"  {name:<{width}}{cmd.summary}" for name, cmd in COMMANDS.items()),
        "",
        "methods (model.class_path in a config):",
        *(
            f"  {name:<{method_width}}{entry.summary}"
            for name, entry in zip(names, METHODS.values(), strict=True)
        ),
        f"  {'selfsup.FineTune':<{method_width}}fine-tune a backbone on labels (classification, segmentation, detection)",
        "",
        "options:",
        f"  {DEBUG_FLAG:<{width}}show the Python traceback of an error (or set SELFSUP_DEBUG=1)",
        "",
        "Quick start: selfsup fit -c configs/quickstart.yaml",
    ]
    return "\n".join(lines)


def _load(target: str) -> Callable[[Sequence[str]], object]:
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def lightning_main(args: Sequence[str] | None = None):
    """LightningCLI's subcommands; ``args=None`` reads ``sys.argv``."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from selfsup._lightning import quiet
    from selfsup.lightning_cli import SelfSupCLI, cli_arguments

    with quiet():
        try:
            return SelfSupCLI(**cli_arguments(args))
        except SIGTERMException:
            # ExactResume saved last.ckpt after the step in progress: a clean, resumable stop
            print(
                "selfsup: stopped on SIGTERM after saving last.ckpt; resume with --ckpt_path last",
                file=sys.stderr,
            )
            raise SystemExit(0) from None


def run(argv: Sequence[str] | None = None) -> object:
    """Run a ``selfsup`` subcommand and return what it built (the LightningCLI, a report...).
    Errors propagate (``main`` turns them into one line)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if args else 2)
    if args[0] in COMMANDS:
        return _load(COMMANDS[args[0]].target)(args[1:])
    if args[0] not in LIGHTNING_COMMANDS and not args[0].startswith("-"):
        import difflib

        close = difflib.get_close_matches(args[0], [*COMMANDS, *LIGHTNING_COMMANDS], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SystemExit(f"selfsup: error: unknown command '{args[0]}'.{hint} See `selfsup --help`.")
    return lightning_main(args)


def error_message(err: BaseException) -> str:
    """The message a user needs, without the layers of wrapping jsonargparse and Lightning add."""
    seen = set()
    while err.__cause__ is not None and id(err) not in seen:  # the innermost cause is the real one
        seen.add(id(err))
        err = err.__cause__
    text = str(err).strip() or type(err).__name__
    if isinstance(err, (KeyError, FileNotFoundError, OSError)) and not text.startswith(type(err).__name__):
        text = f"{text}" if isinstance(err, OSError) else f"{type(err).__name__}: {text}"
    return text.splitlines()[0] if len(text.splitlines()) > 20 else text


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``selfsup`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or os.environ.get("SELFSUP_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        run(args)
    except KeyboardInterrupt:
        print("selfsup: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as err:
        if debug:
            raise
        from jsonargparse import ArgumentError

        if isinstance(err, ArgumentError):  # the command line or config does not parse
            from selfsup.arguments import UsageError
            from selfsup.cli_errors import parser_error

            # a subcommand's parser (selfsup.arguments) has already written it as one line
            message = str(err) if isinstance(err, UsageError) else parser_error(err)
            print(f"selfsup: error: {message}", file=sys.stderr)
            raise SystemExit(2) from None
        message = error_message(err)
        print(f"(run with {DEBUG_FLAG} or SELFSUP_DEBUG=1 for the traceback)", file=sys.stderr)
        print(f"selfsup: error: {message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()


__all__ = ["COMMANDS", "PROGRESS_REFRESH_STEPS", "RUN_ROOT", "main", "run"]
