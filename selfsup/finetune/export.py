"""Fine-tuned checkpoint → the same timm-loadable folder as pretraining exports, now with the head.

Classification with a linear head becomes a plain timm classifier: ``timm.create_model(
"local-dir:DIR", pretrained=True)(images)`` returns the class logits. LoRA is merged into the
weights first. Segmentation exports the backbone as a timm feature extractor plus ``head.safetensors``
(selfsup's ``SegmentationHead``). Adapters, prompt tokens and MLP heads have no plain-timm
counterpart: exporting them is an error that says so.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import timm

from selfsup.checkpoint import epochs_trained, load_checkpoint
from selfsup.export import write_export
from selfsup.finetune.backbone import is_vit
from selfsup.finetune.module import FineTune
from selfsup.finetune.strategies import NotExportable


def _classifier_name(model) -> str:
    classifier = model.get_classifier()
    for name, module in model.named_modules():
        if module is classifier:
            return name
    raise ValueError(f"cannot find the classifier of {type(model).__name__}.")


def export_finetuned(
    checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False
) -> Path:
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"'{out_dir}' exists; pass overwrite=True (--overwrite) to replace it.")
    checkpoint = load_checkpoint(checkpoint_path)
    meta = checkpoint["selfsup"]
    module = FineTune.from_checkpoint(checkpoint_path)
    backbone = module.strategy.merge(copy.deepcopy(module.encoder))
    spec = meta["encoder"]
    extra_files = {}
    if module.task == "classification":
        if module.head.kind != "linear":
            raise NotExportable("an MLP head has no plain-timm counterpart: export needs head: linear.")
        args = dict(spec["model_args"])
        if is_vit(backbone):
            args["global_pool"] = module.pool
            if module.pool == "avg":
                args["fc_norm"] = False
        model = timm.create_model(spec["name"], pretrained=False, num_classes=module.num_classes, **args)
        state = backbone.state_dict()
        classifier = _classifier_name(model)
        state[f"{classifier}.weight"] = module.head.layers.weight.detach()
        state[f"{classifier}.bias"] = module.head.layers.bias.detach()
        model.load_state_dict(state)
    else:
        model = backbone
        extra_files["head.safetensors"] = {
            k: v.detach().contiguous() for k, v in module.head.state_dict().items()
        }
    metadata = {
        "format": 1,
        "method": "finetune",
        "task": module.task,
        "num_classes": module.num_classes,
        "strategy": meta["strategy"],
        "pool": module.pool,
        "classes": (checkpoint.get("datamodule_hyper_parameters") or {}).get("classes"),
        "pretrained_from": meta.get("pretrained_from"),
        "recipe": {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")},
        "data": checkpoint.get("datamodule_hyper_parameters", {}),
        "epochs": epochs_trained(checkpoint),
        "source_checkpoint": str(checkpoint_path),
    }
    return write_export(
        out_dir,
        model,
        f"selfsup_finetune_{meta['strategy']['name']}",
        meta["mean"],
        meta["std"],
        metadata,
        extra_files,
    )
