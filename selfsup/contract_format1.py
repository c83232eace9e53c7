"""Reading selfsup 0.1 checkpoints (format 1): two layouts under the same key, converted in memory
to the current record by :func:`selfsup.contract.CheckpointMeta.from_dict`. Kept apart from the
contract so that the current format reads on its own."""

from __future__ import annotations

from typing import Any


def pair(value: Any) -> int | None:
    if value is None:
        return None
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)


def from_format_1(old: dict[str, Any], current_format: int) -> dict[str, Any]:
    """selfsup 0.1 wrote two layouts under the same key and ``format: 1``."""
    encoder = dict(old["encoder"])
    args = dict(encoder.get("model_args", {}))
    common = {
        "mean": old["mean"],
        "std": old["std"],
        "pool": old.get("pool", "token"),
        "backbone_prefix": "encoder.",
        "format": current_format,
    }
    if old.get("method") != "finetune":
        spec = {
            "name": encoder["name"],
            "model_args": args,
            "img_size": encoder["img_size"],
            "patch_size": encoder["patch_size"],
            "vit": True,
        }
        return {
            **common,
            "kind": "pretrain",
            "method": old["method"],
            "backbone": spec,
            "world_size": old.get("world_size", 1),
        }
    vit = bool(encoder.get("vit"))
    img_size = pair(args.pop("img_size", None)) if vit else None
    patch_size = pair(args.pop("patch_size", None)) if vit else None
    spec = {
        "name": encoder["name"],
        "model_args": args,
        "img_size": img_size,
        "patch_size": patch_size,
        "vit": vit,
    }
    task = {
        "name": old["task"],
        "num_classes": old["num_classes"],
        "head": (old.get("head") or {}).get("kind", "linear"),
        "strategy": old["strategy"],
    }
    return {
        **common,
        "kind": "finetune",
        "method": "finetune",
        "backbone": spec,
        "task": task,
        "pretrained_from": old.get("pretrained_from"),
    }


FORMAT_1_STATE_KEYS = {"head.": "task.head."}
"""Fine-tune state-dict prefixes renamed by format 2 (the head moved into the task object)."""
