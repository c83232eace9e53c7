"""Fine-tuning: a pretrained backbone + a task head + a strategy (``selfsup.FineTune``)."""

from selfsup.finetune.module import FineTune
from selfsup.finetune.strategies import (
    STRATEGIES,
    Adapter,
    BitFit,
    Full,
    Linear,
    LoRA,
    NotExportable,
    Partial,
    Prompt,
    Strategy,
    get_strategy,
)

__all__ = [
    "STRATEGIES",
    "Adapter",
    "BitFit",
    "FineTune",
    "Full",
    "Linear",
    "LoRA",
    "NotExportable",
    "Partial",
    "Prompt",
    "Strategy",
    "get_strategy",
]
