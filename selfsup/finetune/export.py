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

from selfsup.contract import load_checkpoint, read_meta
from selfsup.export import export_metadata, write_export
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
    meta = read_meta(checkpoint, checkpoint_path).require(checkpoint_path, kind="finetune")
    module = FineTune.from_checkpoint(checkpoint_path)
    backbone = module.strategy.merge(copy.deepcopy(module.encoder))
    extra_files = {}
    if module.task.name == "classification":
        if module.head.kind != "linear":
            raise NotExportable("an MLP head has no plain-timm counterpart: export needs head: linear.")
        model = meta.backbone.build(
            pool=module.pool if is_vit(backbone) else None, num_classes=module.num_classes
        )
        state = backbone.state_dict()
        classifier = _classifier_name(model)
        state[f"{classifier}.weight"] = module.head.layers.weight.detach()
        state[f"{classifier}.bias"] = module.head.layers.bias.detach()
        model.load_state_dict(state)
    else:
        model = backbone
        extra_files["head.safetensors"] = {k: v.detach().contiguous() for k, v in module.head.state_dict().items()}
    metadata = export_metadata(
        checkpoint,
        meta,
        checkpoint_path,
        task=meta.task,
        num_classes=module.num_classes,
        strategy=meta.task["strategy"],
        classes=(checkpoint.get("datamodule_hyper_parameters") or {}).get("classes"),
        pretrained_from=meta.pretrained_from,
    )
    return write_export(
        out_dir,
        model,
        f"selfsup_finetune_{meta.task['strategy']['name']}",
        meta.mean,
        meta.std,
        metadata,
        extra_files,
    )
