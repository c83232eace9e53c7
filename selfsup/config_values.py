"""Configuration values as checkpoints and YAML hold them: dataclasses as plain dicts and back.
``torch.load(weights_only=True)`` and JSON read what :func:`plain` makes."""

from __future__ import annotations

import dataclasses
from typing import Any


def plain(value: Any) -> Any:
    """Dataclasses → dicts and tuples → lists, recursively: what ``torch.load(weights_only=True)``
    and JSON both read."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def as_config(cls: type, value: Any) -> Any:
    """A dataclass instance, from itself or from a mapping of its fields (as stored in a checkpoint
    or written in YAML); lists become tuples where the field's default is a tuple."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        fixed = {
            k: tuple(v) if isinstance(v, list) and isinstance(defaults.get(k), tuple) else v
            for k, v in value.items()
        }
        return cls(**fixed)
    raise TypeError(f"expected {cls.__name__} or a dict of its fields, got {type(value).__name__}.")
