"""The one line a user needs from a command line or config that does not parse: what is wrong,
where, and the closest name when one is misspelt (model, data, trainer, checkpoint and the
command's own options). ``selfsup.cli.main`` prints it after ``selfsup: error:``."""

from __future__ import annotations

import lightning as L

from selfsup._lightning import RunCheckpoint


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
    unrecognized = re.search(r"[Uu]nrecognized arguments: (--[^\s=]+)", text) or re.search(
        r"does not accept option '([^']+)'", text
    )
    if unrecognized and not klass:  # an option of the command, the trainer or the checkpoint section
        option = "--" + unrecognized.group(1).lstrip("-")
        close = difflib.get_close_matches(option, _top_level_options(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"unrecognized option '{option}'.{hint} `selfsup fit --help` lists the options."
    wrong = _wrong_type(text, klass.group(1) if klass else None)
    if wrong:
        return wrong
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [
        line
        for line in lines
        if not line.startswith(("Subtypes:", "Errors:", "Given value type", "- Expected a"))
    ]
    return " ".join(useful[:4]) if useful else text


def _wrong_type(text: str, class_path: str | None) -> str | None:
    """A value of the wrong type: the key's full name, the types it takes and the value given, from
    the innermost ``Parser key`` block of jsonargparse's error (which nests one block per union it
    tried). A ``null`` given to a nested field on the command line reaches jsonargparse as the string
    'None', which no ``float | None`` accepts: the message then says how to write it."""
    import re

    lines = text.splitlines()
    keys = [
        (i, m.group(1)) for i, line in enumerate(lines) if (m := re.search(r'Parser key "([^"]+)"', line))
    ]
    if not keys:
        return None
    start, key = keys[-1]
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    body = "\n".join(block)
    expected = list(dict.fromkeys(re.findall(r"Expected a <class '([\w.]+)'>", body)))
    subtypes = re.search(r"Subtypes: \[(.*)\]", body)
    if subtypes:
        expected = re.findall(r"<class '([\w.]+)'>", subtypes.group(1))
    given = re.search(r"(?:Got value|Given value): (.*)", body)
    if not expected or not given:
        return None
    names = ["null" if t == "NoneType" else t.rsplit(".", 1)[-1] for t in expected]
    value = given.group(1).strip()
    shown = "null" if value == "None" else repr(value)
    section = keys[0][1]
    name = f"{section}.init_args.{key}" if class_path and len(keys) > 1 else key
    if value == "None" and "null" in names and "." in name:
        parent, leaf = name.rsplit(".", 1)
        return (
            f"{name}: null on the command line reaches this nested field as the text 'None', which it "
            f"({' or '.join(names)}) does not take. Write --{parent} '{{{leaf}: null}}' instead, or set it "
            "in a config file."
        )
    return f"{name}: expected {' or '.join(names)}, got {shown}."


def _top_level_options() -> list[str]:
    """The options of the sections LightningCLI builds from fixed classes (the trainer and the
    checkpoint section) and of the command itself, for suggestions."""
    import inspect

    options = ["--ckpt_path", "--seed_everything", "--config", "--print_config"]
    for section, cls in (("trainer", L.Trainer), ("checkpoint", RunCheckpoint)):
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is not None:
                options += [
                    f"--{section}.{p}"
                    for p in inspect.signature(init).parameters
                    if p not in ("self", "args", "kwargs")
                ]
    return options


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
