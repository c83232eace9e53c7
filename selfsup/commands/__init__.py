"""The ``selfsup`` subcommands that are not LightningCLI's, one module each: ``probe``, ``export``,
``compress``, ``attention``, ``preview`` and ``data`` (``data optimize``). The module ``NAME`` holds
``NAME_parser`` (its command line, built on :mod:`selfsup.arguments`) and ``NAME_command(argv)``,
which parses ``argv`` and calls the library function that does the work (it stays in its own
package: ``selfsup.eval.probe``, ``selfsup.export``, ``selfsup.compress``...). ``selfsup.cli.COMMANDS``
names them. ``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's, run by
``selfsup.cli.lightning_main``.

The names ``selfsup.commands`` held when it was one module (``probe_command``, ``export_parser``,
``DataOverrides``...) still import from here; a command's module is imported when one of its names is
first used.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module of selfsup.commands that defines it
_NAMES = {
    "DataOverrides": "probe",
    "probe_parser": "probe",
    "probe_command": "probe",
    "export_parser": "export",
    "export_command": "export",
    "CompressData": "compress",
    "compress_parser": "compress",
    "compress_command": "compress",
    "attention_parser": "attention",
    "attention_command": "attention",
    "preview_parser": "preview",
    "preview_command": "preview",
    "data_parser": "data",
    "data_command": "data",
}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])


__all__ = sorted(_NAMES)
