"""The command-line parsers of the subcommands that are not LightningCLI's (``probe``, ``export``,
``compress``, ``attention``, ``preview``, ``data``): one way to write a boolean flag, and parse
errors as one line.

A boolean flag (:func:`add_flag`) is jsonargparse's ``ActionYesNo``: ``--overwrite`` and
``--overwrite true`` set it, ``--overwrite false`` and ``--no_overwrite`` clear it, and a config file
sets it with ``overwrite: true``. A parse error raises ``ArgumentError`` with one line naming the
command and the option with its ``--`` (``export needs --out DIR (the export folder to write)``);
``selfsup.cli.main`` prints it as ``selfsup: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import NoReturn

from jsonargparse import ActionYesNo, ArgumentParser


def add_flag(parser: argparse.ArgumentParser, name: str, help: str, default: bool = False) -> None:
    """A boolean option ``--name``: bare or ``true``/``yes`` sets it, ``false``/``no`` or
    ``--no_name`` clears it."""
    parser.add_argument(f"--{name}", action=ActionYesNo, nargs="?", default=default, help=help)


def is_flag(action: argparse.Action) -> bool:
    """Whether an option is a boolean flag (written by :func:`add_flag`, or any other way)."""
    return (
        isinstance(action, (ActionYesNo, argparse._StoreTrueAction, argparse._StoreFalseAction))
        or action.type is bool
        or "bool" in str(getattr(action, "_typehint", ""))
    )


def _display(action: argparse.Action) -> str:
    """``--out DIR`` for an option, ``CHECKPOINT`` for a positional argument."""
    given = action.metavar if isinstance(action.metavar, str) else ""
    metavar = given if re.fullmatch(r"[A-Z][A-Z_]*", given) else action.dest.rsplit(".", 1)[-1].upper()
    if not action.option_strings:
        return metavar
    option = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
    return option if action.nargs == 0 or isinstance(action, ActionYesNo) else f"{option} {metavar}"


def _find(parser: argparse.ArgumentParser, name: str) -> argparse.Action | None:
    """The action of a destination (``out``, ``data.source``) or an option string (``-c/--config``)."""
    names = {name, *name.split("/")}
    for action in parser._actions:
        if action.dest == name or names & set(action.option_strings):
            return action
    return None


def _described(action: argparse.Action | None, name: str) -> str:
    if action is None:
        return f"--{name}" if "." in name else name
    text = _display(action)
    return f"{text} ({action.help})" if action.help and action.help is not argparse.SUPPRESS else text


def _type_name(expected: str) -> str:
    """``typing.Literal['token', 'avg']`` -> ``token|avg``; ``<class 'int'>`` -> ``int``."""
    literal = re.fullmatch(r"typing\.Literal\[(.*)\]", expected)
    if literal:
        return "|".join(part.strip().strip("'\"") for part in literal.group(1).split(","))
    named = re.fullmatch(r"<class '(?:[\w.]+\.)?(\w+)'>", expected)
    return named.group(1) if named else expected


def one_line(parser: argparse.ArgumentParser, command: str, message: str) -> str:
    """A parser's (possibly multi-line) error message as one line: what is wrong, with which option
    (written with its ``--``), and what to do."""
    help_hint = f"`selfsup {command} --help` lists the options."
    required = re.match(r"the following arguments are required: (.*)", message)
    if required:
        names = [name.strip() for name in required.group(1).split(",")]
        parts = [_described(_find(parser, name), name) for name in names]
        listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        return f"{command} needs {listed}. {help_hint}"
    unknown = re.match(r"unrecognized arguments: (.*)", message)
    if unknown:
        given = unknown.group(1).split()
        first = next((g.split("=")[0] for g in given if g.startswith("-")), None)
        if first is None:
            return f"{command}: unexpected argument(s) {' '.join(given)}. {help_hint}"
        options = {o.lstrip("-"): o for a in parser._actions for o in a.option_strings if o.startswith("--")}
        close = difflib.get_close_matches(first.lstrip("-"), options, n=1)
        hint = f" Did you mean '{options[close[0]]}'?" if close else ""
        return f"{command}: unrecognized option '{first}'.{hint} {help_hint}"
    key = re.match(r'Parser key "([^"]+)":', message)
    if key:
        action = _find(parser, key.group(1))
        option = _display(action).split()[0] if action else f"--{key.group(1)}"
        value = re.search(r"Given value: (.*)", message) or re.search(r"Got value: (.*)", message)
        expected = [
            _type_name(e) for e in re.findall(r"Expected a (.*?)(?:\. Got value:.*)?$", message, re.M)
        ]
        wanted = " or ".join(e for e in dict.fromkeys(expected) if e != "NoneType")  # null: the default
        if not wanted:  # not a type error: e.g. a config file that does not exist
            rest = " ".join(message[key.end() :].split()).rstrip(".")
            return f"{command} {option}: {rest}. {help_hint}"
        given = f" {value.group(1).strip()!r}" if value else ""
        return f"{command} {option}: invalid value{given}: expected {wanted}. {help_hint}"
    argument = re.match(r"argument ([^:]+): (.*)", message, re.S)
    if argument:
        action = _find(parser, argument.group(1))
        option = _display(action).split()[0] if action else argument.group(1)
        problem = " ".join(argument.group(2).split())
        if action is not None and is_flag(action):
            value = re.search(r"value: (.*)", problem)
            given = f" {value.group(1)}" if value else ""
            return (
                f"{command} {option}: invalid value{given}: a flag takes true or false, or nothing "
                f"({option} alone sets it; a bare flag goes after the positional arguments). {help_hint}"
            )
        if "expected one argument" in problem:
            return f"{command} {option} needs a value: {_described(action, option)}. {help_hint}"
        return f"{command} {option}: {problem}. {help_hint}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f"{command}: {(' '.join(lines[:3]) or message).rstrip('.')}. {help_hint}"


class UsageError(argparse.ArgumentError):
    """A parse error already written as one line; ``selfsup.cli.main`` prints it as
    ``selfsup: error: <line>`` and exits with status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


def usage_error(parser: argparse.ArgumentParser, command: str, message: str) -> UsageError:
    """The :class:`UsageError` of a parser's error message. argparse and jsonargparse pass an error
    they caught to ``error`` again: one already formatted is returned as it is."""
    handled = sys.exc_info()[1]
    if isinstance(handled, UsageError):
        return handled
    return UsageError(one_line(parser, command, message))


class CommandParser(ArgumentParser):
    """jsonargparse's parser for ``selfsup COMMAND``: a parse error raises an ``ArgumentError`` with
    one line (:func:`one_line`) instead of printing the usage and exiting. Options are written in
    full (no abbreviations: ``--over`` is an error, not ``--overwrite``)."""

    def __init__(self, command: str = "", **kwargs) -> None:  # jsonargparse makes helper parsers bare
        if command:
            kwargs.setdefault("prog", f"selfsup {command}")
        super().__init__(exit_on_error=False, allow_abbrev=False, **kwargs)
        self.command = command or self.prog

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        raise usage_error(self, self.command, message) from None


class PassThroughParser(argparse.ArgumentParser):
    """argparse's parser for a command that passes the arguments it does not know on to a config
    (``selfsup preview``): errors as :class:`CommandParser`'s."""

    def __init__(self, command: str, **kwargs) -> None:
        super().__init__(prog=f"selfsup {command}", allow_abbrev=False, **kwargs)
        self.command = command

    def error(self, message: str) -> NoReturn:
        raise usage_error(self, self.command, message) from None


__all__ = [
    "CommandParser",
    "PassThroughParser",
    "UsageError",
    "add_flag",
    "is_flag",
    "one_line",
    "usage_error",
]
