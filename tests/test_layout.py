"""Properties of the code base as a whole: cheap imports without side effects, no test importing
another test module, no package named after a standard-library module, the import contracts of
pyproject.toml kept and no import cycle between selfsup's modules."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx

from tests.helpers import REPO
from tests.import_contracts import names_submodule

# helpers meant for sharing, not tests
SHARED_TEST_MODULES = {
    "tests.helpers",
    "tests.faulty",
    "tests.import_contracts",
    "tests.loss_processes",
    "tests.method_helpers",
}


def test_no_test_imports_another_test_module():
    offenders = []
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("tests.") and not any(
                    name == m or name.startswith(m + ".") for m in SHARED_TEST_MODULES
                ):
                    if name.rsplit(".", 1)[0] not in SHARED_TEST_MODULES:
                        offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert offenders == []


def test_importing_the_losses_loads_no_framework_and_sets_nothing_global():
    """``import selfsup.losses`` (and ``import selfsup``) must not load Lightning, Kornia, matplotlib
    or torchmetrics, nor set warnings filters or a matplotlib backend."""
    code = """
import json, sys, warnings
import torch  # torch and numpy set filters of their own
filters = list(warnings.filters)
import selfsup.losses, selfsup
heavy = [m for m in ("lightning", "pytorch_lightning", "kornia", "matplotlib", "torchmetrics") if m in sys.modules]
print(json.dumps({"heavy": heavy, "filters_changed": warnings.filters != filters,
                  "mpl_backend": "MPLBACKEND" in __import__("os").environ}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "filters_changed": False, "mpl_backend": False}
    # the lazy exports still resolve
    import selfsup

    assert selfsup.load_encoder.__module__ == "selfsup.load" and selfsup.DINO.method == "dino"


def test_import_contracts_hold():
    """``lint-imports`` keeps every contract of ``[tool.importlinter]`` (layers, no Lightning below the
    modules, ``torch.distributed`` in ``selfsup.distributed`` only, contract/export/eval free of the
    methods and the fine-tune)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint_imports), "--no-cache"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_cycles_between_selfsups_modules():
    graph = grimp.build_graph("selfsup", exclude_type_checking_imports=True, cache_dir=None)
    imports = nx.DiGraph(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
    )
    cycles = [sorted(group) for group in nx.strongly_connected_components(imports) if len(group) > 1]
    assert cycles == []


def test_the_torch_distributed_contract_reads_every_form_of_import():
    for line in (
        "import torch.distributed as dist",
        "import os, torch.distributed",
        "from torch.distributed.fsdp import FullyShardedDataParallel",
        "from torch import distributed as dist",
        "from torch import nn, distributed  # comment",
    ):
        assert names_submodule(line, "torch.distributed"), line
    for line in (
        "import torch",
        "from torch import nn",
        "import torch.nn.functional as F",
        "from torch import distributions",
    ):
        assert not names_submodule(line, "torch.distributed"), line


def test_moved_names_still_import_from_where_they_were():
    import selfsup.commands
    from selfsup.cli import PROGRESS_REFRESH_STEPS, RUN_ROOT
    from selfsup.commands import preview_command as moved_command
    from selfsup.contract import epochs_trained
    from selfsup.export import epochs_trained as exported_epochs_trained
    from selfsup.settings import PROGRESS_REFRESH_STEPS as refresh
    from selfsup.settings import RUN_ROOT as root

    assert (
        exported_epochs_trained is epochs_trained and moved_command.__module__ == "selfsup.commands.preview"
    )
    # selfsup.commands was one module; its names now come from selfsup.commands.NAME
    for name, module in (
        ("probe_command", "probe"),
        ("DataOverrides", "probe"),
        ("export_parser", "export"),
        ("data_command", "data"),
        ("compress_command", "compress"),
        ("attention_command", "attention"),
    ):
        assert getattr(selfsup.commands, name) is getattr(
            importlib.import_module(f"selfsup.commands.{module}"), name
        )
    assert (RUN_ROOT, PROGRESS_REFRESH_STEPS) == (root, refresh) == ("runs", 10)


def test_no_module_of_the_package_is_over_400_lines():
    """One concept per file: a module that grows past 400 lines holds more than one."""
    long = {
        str(path.relative_to(REPO)): n
        for path in (REPO / "selfsup").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert not long, long


def test_only_the_contract_reads_lightnings_checkpoint_keys():
    """Lightning's checkpoint layout (``state_dict``, ``hyper_parameters``,
    ``datamodule_hyper_parameters``) is read in one place, ``selfsup.contract``; everything else
    asks it (``model_weights``, ``model_arguments``, ``data_arguments``)."""
    raw = {"state_dict", "hyper_parameters", "datamodule_hyper_parameters"}
    found = []
    for path in (REPO / "selfsup").rglob("*.py"):
        if path.name == "contract.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in raw:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not found, found
