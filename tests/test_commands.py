"""The command lines of the subcommands that are not LightningCLI's (probe, export, compress, attention,
preview, data): every boolean flag takes the same forms, and a parse error is one line naming the
option with its ``--``, with exit status 2."""

import ast
import importlib
import inspect

import pytest
from jsonargparse import ActionYesNo, ArgumentParser

from selfsup.arguments import is_flag
from selfsup.cli import COMMANDS, main
from tests.helpers import REPO

# the least each command parses: its positional arguments and required options
MINIMAL = {
    "probe": ["run.ckpt"],
    "export": ["run.ckpt", "--out", "export"],
    "compress": ["export", "--out", "compressed"],
    "attention": ["run.ckpt", "image.png", "--out", "maps"],
    "preview": ["-c", "config.yaml"],
    "data": ["optimize", "src", "dst", "--image_size", "32"],
    "zeroshot": ["clip.ckpt"],
}


def parser_of(command: str):
    """``<module>.<name>_parser()`` beside the command's ``<name>_command``."""
    module, function = COMMANDS[command].target.split(":")
    defined_in = importlib.import_module(getattr(importlib.import_module(module), function).__module__)
    return getattr(defined_in, function.replace("_command", "_parser"))()


def parse(parser, argv):
    if isinstance(parser, ArgumentParser):
        return parser.parse_args(argv)
    return parser.parse_known_args(argv)[0]  # preview: what it does not know goes to the config


def test_each_command_is_one_module_of_selfsup_commands():
    """One file per subcommand: ``selfsup NAME`` runs ``selfsup.commands.NAME:NAME_command``, the one
    ``*_command`` its module defines (beside ``NAME_parser``), and every module there is a command."""
    modules = {path.stem for path in (REPO / "selfsup" / "commands").glob("*.py")} - {"__init__"}
    assert modules == set(COMMANDS)
    for name, command in COMMANDS.items():
        assert command.target == f"selfsup.commands.{name}:{name}_command"
        module = importlib.import_module(f"selfsup.commands.{name}")
        tree = ast.parse(inspect.getsource(module))
        defined = [
            n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.endswith("_command")
        ]
        assert defined == [f"{name}_command"], f"selfsup/commands/{name}.py defines {defined}"
        function = getattr(module, f"{name}_command")
        assert inspect.isfunction(function) and function.__module__ == module.__name__
        assert inspect.isfunction(getattr(module, f"{name}_parser"))


def test_every_command_has_a_parser_and_a_minimal_command_line():
    assert set(MINIMAL) == set(COMMANDS)
    for command, argv in MINIMAL.items():
        parse(parser_of(command), argv)


def test_every_boolean_flag_takes_the_bare_flag_true_false_and_no():
    flags = {}
    for command in COMMANDS:
        parser = parser_of(command)
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help", "config") or not is_flag(action):
                continue
            option = action.option_strings[0]
            flags[f"{command} {option}"] = True
            assert isinstance(action, ActionYesNo), f"{command} {option} is not an ActionYesNo flag"
            dest = action.dest
            base = MINIMAL[command]
            assert getattr(parse(parser, base), dest) is False, f"{command} {option}: default"
            assert getattr(parse(parser, [*base, option]), dest) is True, f"{command} {option} (bare)"
            assert getattr(parse(parser, [*base, option, "true"]), dest) is True, f"{command} {option} true"
            assert getattr(parse(parser, [*base, option, "false"]), dest) is False, (
                f"{command} {option} false"
            )
            no = option.replace("--", "--no_", 1)
            assert getattr(parse(parser, [*base, option, no]), dest) is False, f"{command} {no}"
    # the flags there are today: the walk above must not pass by finding none
    assert {"export --overwrite", "compress --overwrite", "compress --int8", "compress --onnx"} <= set(flags)


ERRORS = [
    (["export", "run.ckpt"], "export needs --out DIR (the export folder to write)."),
    (["probe"], "probe needs CHECKPOINTS (checkpoint files and/or run folders)."),
    (["attention", "run.ckpt", "image.png"], "attention needs --out DIR (folder for the PNGs)."),
    (["compress", "export"], "compress needs --out DIR (the folder to write)."),
    (["preview"], "preview needs --config CONFIG (a selfsup config (YAML))."),
    (
        ["data", "optimize", "src", "dst"],
        "data needs --image_size IMAGE_SIZE (side of the stored images).",
    ),
    (
        ["export", "run.ckpt", "--out", "x", "--overwrite", "maybe"],
        "export --overwrite: invalid value 'maybe': a flag takes true or false, or nothing "
        "(--overwrite alone sets it; a bare flag goes after the positional arguments).",
    ),
    (
        ["export", "run.ckpt", "--out", "x", "--pool", "max"],
        "export --pool: invalid value 'max': expected token|avg.",
    ),
    (
        ["compress", "e", "--out", "x", "--threads", "two"],
        "compress --threads: invalid value 'two': expected int.",
    ),
    (
        ["export", "run.ckpt", "--out", "x", "--overwrit"],
        "export: unrecognized option '--overwrit'. Did you mean '--overwrite'?",
    ),
    (["export", "run.ckpt", "--out"], "export --out needs a value: --out DIR (the export folder to write)."),
    (["export", "run.ckpt", "other.ckpt", "--out", "x"], "export: unexpected argument(s) other.ckpt."),
]


@pytest.mark.parametrize("argv, message", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_a_parse_error_is_one_line_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    command = argv[0]
    assert err == [f"selfsup: error: {message} `selfsup {command} --help` lists the options."]
