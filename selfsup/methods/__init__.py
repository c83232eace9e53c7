"""Pretraining methods (LightningModules) and their registry.

A method is one file. ``METHODS`` maps each method's name to its class (by import path, loaded on
use) and one line on what it does; ``selfsup --help``, ``selfsup.<ClassName>`` and a config's
``model.class_path: selfsup.<ClassName>`` read it. It is built on first use from

- every module in this folder: each class whose body declares ``method = "<name>"`` (and, for
  ``selfsup --help``, ``summary = "<one line>"``; else the docstring's first line), as string
  literals;
- the entry points of the group ``selfsup.methods`` that installed packages declare in their
  ``pyproject.toml`` (``<name> = "package.module:ClassName"``), whose classes declare the same.

The declarations are read from the source, without importing it, so listing the methods loads
neither Lightning nor the methods; a method's module is imported when its class is asked for.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import pkgutil
from pathlib import Path
from typing import NamedTuple

ENTRY_POINT_GROUP = "selfsup.methods"
_NOT_METHODS = {"base"}  # modules of this folder that hold no method


class MethodEntry(NamedTuple):
    class_path: str
    summary: str
    source: str = ""  # where it was declared: a file of this folder, or a package's entry point

    @property
    def class_name(self) -> str:
        return self.class_path.rsplit(".", 1)[1]

    def load(self) -> type:
        module, name = self.class_path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)


class Declaration(NamedTuple):
    class_name: str
    method: str
    summary: str


def declarations(source: str, filename: str) -> list[Declaration]:
    """The classes of a module's source that declare a method: ``method = "<name>"`` in the class body
    (a non-empty string literal), with their ``summary`` (else the docstring's first line)."""
    found = []
    for node in ast.parse(source, filename).body:
        if not isinstance(node, ast.ClassDef):
            continue
        literals = {}
        for statement in node.body:
            target = statement.target if isinstance(statement, ast.AnnAssign) else None
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
            value = getattr(statement, "value", None)
            if (
                isinstance(target, ast.Name)
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            ):
                literals[target.id] = value.value
        if literals.get("method"):
            summary = literals.get("summary") or (ast.get_docstring(node) or "").split("\n", 1)[0]
            found.append(Declaration(node.name, literals["method"], summary.strip()))
    return found


def _module_source(module: str) -> tuple[str, str]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ModuleNotFoundError(f"no Python source for module {module!r}")
    return Path(spec.origin).read_text(encoding="utf-8"), spec.origin


def _folder_methods() -> list[tuple[str, MethodEntry]]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.ispkg or info.name.startswith("_") or info.name in _NOT_METHODS:
            continue
        module = f"{__name__}.{info.name}"
        source, filename = _module_source(module)
        for decl in declarations(source, filename):
            found.append((decl.method, MethodEntry(f"{module}.{decl.class_name}", decl.summary, filename)))
    return found


def _entry_point_methods() -> list[tuple[str, MethodEntry]]:
    found = []
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        package = point.dist.name if point.dist is not None else "an installed package"
        where = f"entry point '{point.name} = {point.value}' of {package}"
        if not point.attr or "." in point.attr:
            raise ValueError(f"{where}: it must name a class as 'package.module:ClassName'.")
        try:
            source, filename = _module_source(point.module)
        except ImportError as err:
            raise ValueError(
                f"{where}: its module cannot be found ({err}); reinstall or uninstall {package}."
            ) from None
        decl = next((d for d in declarations(source, filename) if d.class_name == point.attr), None)
        if decl is None or decl.method != point.name:
            declared = "declares no method" if decl is None else f"declares method = {decl.method!r}"
            raise ValueError(
                f"{where}: class {point.attr} in {filename} {declared}; give the class "
                f"method = {point.name!r} or name the entry point after its method."
            )
        found.append((point.name, MethodEntry(f"{point.module}.{point.attr}", decl.summary, where)))
    return found


@functools.cache
def registry() -> dict[str, MethodEntry]:
    """Discover the methods: this folder's first, then the entry points. Two methods with the same
    name, or with the same class name (``selfsup.<ClassName>`` would be ambiguous), are an error
    naming both. Cached; ``registry.cache_clear()`` discovers again."""
    methods: dict[str, MethodEntry] = {}
    classes: dict[str, MethodEntry] = {}
    for name, entry in [*_folder_methods(), *_entry_point_methods()]:
        for seen, kind, fix in (
            (methods.get(name), f"method {name!r}", "method"),
            (classes.get(entry.class_name), f"class name {entry.class_name!r}", "class"),
        ):
            if seen is not None:
                raise ValueError(
                    f"{kind} is declared twice, by {seen.source} and by {entry.source}: rename one's {fix}."
                )
        methods[name] = classes[entry.class_name] = entry
    return methods


def find_class(class_name: str) -> MethodEntry | None:
    """The registered method whose class is called ``class_name`` (what ``selfsup.<ClassName>`` names)."""
    return next((e for e in registry().values() if e.class_name == class_name), None)


def method_class(name: str) -> type:
    """The class registered as ``name``; a clear error lists the registered names."""
    methods = registry()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(methods)}.")
    return methods[name].load()


def __getattr__(name: str):
    # METHODS is discovered on first use; `from selfsup.methods import SimCLR` loads only that module
    if name == "METHODS":
        return registry()
    if name == "PretrainModule":
        from selfsup.methods.base import PretrainModule

        return PretrainModule
    if not name.startswith("_"):
        entry = find_class(name)
        if entry is not None:
            return entry.load()
    raise AttributeError(f"module 'selfsup.methods' has no attribute {name!r}")


__all__ = ["ENTRY_POINT_GROUP", "METHODS", "MethodEntry", "find_class", "method_class", "registry"]
