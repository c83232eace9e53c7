"""The README's commands are the ones that work: CI runs the test command verbatim, and every
``selfsup`` command of its code blocks is a real subcommand whose options parse."""

import importlib
import re
import shlex

import pytest

from selfsup.cli import COMMANDS, LIGHTNING_COMMANDS
from selfsup.cli import run as selfsup_run
from tests.helpers import REPO

# where each subcommand's parser is: beside the function COMMANDS names (selfsup.commands.NAME)
PARSERS = {name: f"selfsup.commands.{name}:{name}_parser" for name in COMMANDS}


def bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def selfsup_commands() -> list[list[str]]:
    """The arguments of every ``selfsup`` command in the README's bash blocks (comments dropped,
    continued lines joined; ``python -m selfsup`` and ``.venv/bin/selfsup`` included)."""
    commands = []
    for block in bash_blocks((REPO / "README.md").read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;", line):
                words = shlex.split(part, comments=True)
                start = next((i for i, w in enumerate(words) if w.rsplit("/", 1)[-1] == "selfsup"), None)
                if start is not None:
                    commands.append(words[start + 1 :])
    return commands


def test_readme_opens_with_two_commands_and_ci_runs_the_test_command_verbatim():
    blocks = bash_blocks((REPO / "README.md").read_text())
    quickstart, tests = blocks[0], blocks[1]
    assert (
        quickstart.endswith(".venv/bin/selfsup fit -c configs/quickstart.yaml")
        and "python3 -m venv" in quickstart
    )
    assert tests.endswith(".venv/bin/python -m pytest") and "python3 -m venv" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


COMMAND_LINES = selfsup_commands()


def test_the_readme_shows_commands_of_every_kind():
    assert {args[0] for args in COMMAND_LINES} >= {
        "fit",
        "probe",
        "export",
        "preview",
        "attention",
        "compress",
    }


@pytest.mark.parametrize("args", COMMAND_LINES, ids=lambda args: " ".join(args)[:60])
def test_every_readme_command_is_a_subcommand_whose_options_parse(args, capsys, monkeypatch):
    command = args[0]
    assert command in COMMANDS or command in LIGHTNING_COMMANDS, f"`selfsup {command}` is no subcommand"
    monkeypatch.chdir(REPO)  # config paths are relative to the repository
    if command in LIGHTNING_COMMANDS:  # the config and every --section.key resolve
        with pytest.raises(SystemExit) as exit_info:
            selfsup_run([*args, "--print_config"])
        assert exit_info.value.code in (0, None), capsys.readouterr().err
        return
    module, name = PARSERS[command].split(":")
    parser = getattr(importlib.import_module(module), name)()
    parser.parse_args(args[1:])  # an unknown option or a missing argument ends in SystemExit
