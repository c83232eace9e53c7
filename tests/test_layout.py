"""Properties of the code base as a whole: cheap imports without side effects, no test importing
another test module, no package named after a standard-library module."""

import ast
import json
import subprocess
import sys

from tests.helpers import REPO

SHARED_TEST_MODULES = {"tests.helpers", "tests.faulty"}  # helpers meant for sharing, not tests


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

    assert selfsup.load_encoder.__module__ == "selfsup.export" and selfsup.DINO.method == "dino"
