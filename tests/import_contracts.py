"""An import-linter contract type for what the built-in ones cannot say: which of selfsup's modules may
import a *subpackage* of an external package (``torch.distributed``). Import-linter sees an external
package as one module (``torch``), so this contract reads the import statements grimp recorded.

Used from ``[tool.importlinter]`` in pyproject.toml (``contract_types``); ``lint-imports`` runs in the
test suite (tests/test_layout.py).
"""

from __future__ import annotations

import re

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


def names_submodule(line: str, submodule: str) -> bool:
    """Whether the import statement ``line`` imports ``submodule`` (a dotted name) or anything in it:
    ``import torch.distributed as dist``, ``from torch.distributed.fsdp import X``,
    ``from torch import distributed``. A parenthesised ``from torch import (`` whose names follow on
    later lines is not seen (grimp records the first line only)."""
    statement = line.split("#", 1)[0].strip()
    names: list[str] = []
    if match := re.fullmatch(r"import\s+(.+)", statement):
        names = [part.split()[0] for part in match.group(1).split(",") if part.strip()]
    elif match := re.fullmatch(r"from\s+(\S+)\s+import\s+\(?(.+?)\)?", statement):
        package = match.group(1)
        names = [package] + [
            f"{package}.{part.split()[0]}" for part in match.group(2).split(",") if part.strip()
        ]
    return any(name == submodule or name.startswith(submodule + ".") for name in names)


class ExternalSubpackageContract(Contract):
    """Only ``allowed_modules`` may import ``subpackage`` (``torch.distributed``); every other module of
    the root package is checked, lazy imports (inside functions) included.

    Configuration options:

        - subpackage:       the dotted name of the external subpackage.
        - allowed_modules:  the modules that may import it.
    """

    type_name = "external_subpackage"

    subpackage = fields.StringField()
    allowed_modules = fields.ListField(subfield=fields.ModuleField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        package = str(self.subpackage).split(".")[0]
        allowed = {module.name for module in self.allowed_modules}  # type: ignore[attr-defined]
        offences = []
        if package in graph.modules:
            for importer in sorted(graph.find_modules_that_directly_import(package)):
                if importer in allowed:
                    continue
                for detail in graph.get_import_details(importer=importer, imported=package):
                    if names_submodule(detail["line_contents"], str(self.subpackage)):
                        offences.append(
                            {
                                "importer": importer,
                                "line": detail["line_number"],
                                "text": detail["line_contents"],
                            }
                        )
        return ContractCheck(kept=not offences, metadata={"offences": offences})

    def render_broken_contract(self, check: ContractCheck) -> None:
        allowed = ", ".join(module.name for module in self.allowed_modules)  # type: ignore[attr-defined]
        for offence in check.metadata["offences"]:
            output.print_error(
                f"{offence['importer']} imports {self.subpackage} (l.{offence['line']}: {offence['text']}); "
                f"only {allowed} may: use what it provides.",
                bold=False,
            )
            output.new_line()
