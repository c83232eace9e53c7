"""Fine-tuning: a pretrained backbone + a task + a strategy (``selfsup.FineTune``).

Names load on first use (``FineTune`` pulls in Lightning and torchmetrics)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FineTune": "selfsup.finetune.module",
    "TASKS": "selfsup.finetune.tasks",
    "Task": "selfsup.finetune.tasks",
    **{
        name: "selfsup.finetune.strategies"
        for name in (
            "STRATEGIES",
            "Adapter",
            "BitFit",
            "Full",
            "Linear",
            "LoRA",
            "NotExportable",
            "Partial",
            "Prompt",
            "Strategy",
            "get_strategy",
        )
    },  # fmt: skip
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selfsup.finetune' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
