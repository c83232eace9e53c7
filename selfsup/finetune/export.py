"""Fine-tuned checkpoint → the same timm-loadable folder as pretraining exports, now with the head.

Classification with a linear head becomes a plain timm classifier: ``timm.create_model(
"local-dir:DIR", pretrained=True)(images)`` returns the class logits. LoRA is merged into the
weights first. Segmentation exports the backbone as a timm feature extractor plus ``head.safetensors``
(selfsup's ``SegmentationHead``). Adapters, prompt tokens and MLP heads have no plain-timm
counterpart: exporting them is an error that says so.

Detection exports the encoder the same way (a timm feature extractor, LoRA merged: ``timm.create_model(
"local-dir:DIR", pretrained=True)`` loads it without selfsup) plus the rest of the detector:

    detector.safetensors  the ViTDet pyramid and the torchvision head (``backbone.levels.*``, ``head.*``;
                          the encoder's weights are model.safetensors', not repeated)
    selfsup.json          its ``detector`` entry: num_classes, image_size, class names, mean/std and the
                          ``DetectorConfig`` (kind, channels, strides, norm, blocks, head_convs,
                          score_thresh, nms_thresh, detections_per_img)

:func:`load_detector` rebuilds the whole torchvision detector from the folder::

    from selfsup.finetune.export import load_detector

    detector = load_detector("my_detector").eval()
    detections = detector(images)  # float [B, 3, S, S] in [0, 1] → [{"boxes", "scores", "labels"}]

The pyramid is selfsup code (torchvision has no ViTDet pyramid), so the whole detector needs selfsup;
without :func:`load_detector` it is ``build_detector(SimpleFeaturePyramid(timm encoder, ...), ...)`` with
the recorded arguments and ``load_state_dict(detector.safetensors, strict=False)`` (the only missing
keys are the encoder's, loaded by timm).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from selfsup.contract import data_arguments, load_checkpoint, read_meta
from selfsup.encoders import is_vit
from selfsup.export import EXPORT_WHAT, EXPORT_WRITES, export_metadata, write_export
from selfsup.finetune.module import FineTune
from selfsup.finetune.strategies import NotExportable
from selfsup.output_folder import check_target

DETECTOR_FILE = "detector.safetensors"


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
    check_target(out_dir, overwrite, EXPORT_WRITES, EXPORT_WHAT)
    checkpoint = load_checkpoint(checkpoint_path)
    meta = read_meta(checkpoint, checkpoint_path).require(checkpoint_path, kind="finetune")
    module = FineTune.from_checkpoint(checkpoint_path)
    backbone = module.strategy.merge(copy.deepcopy(module.encoder))
    extra_files = {}
    extra: dict[str, Any] = {}
    classes = data_arguments(checkpoint).get("classes")
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
    elif module.task.name == "detection":
        model = backbone
        # the task's detector holds the pyramid and the head; the encoder is FineTune's (not in this
        # state dict), exported as model.safetensors
        extra_files[DETECTOR_FILE] = {k: v.detach().contiguous() for k, v in module.head.state_dict().items()}
        extra["detector"] = {
            "weights": DETECTOR_FILE,
            "num_classes": module.num_classes,
            "image_size": int(meta.task["image_size"]),
            "classes": meta.task.get("classes"),
            "mean": list(meta.mean),
            "std": list(meta.std),
            "config": meta.task["detector"],
            "load": f"selfsup.finetune.export.load_detector(DIR); {DETECTOR_FILE} holds the pyramid and head",
        }
        classes = meta.task.get("classes") or classes
    else:
        model = backbone
        extra_files["head.safetensors"] = {
            k: v.detach().contiguous() for k, v in module.head.state_dict().items()
        }
    metadata = export_metadata(
        checkpoint,
        meta,
        checkpoint_path,
        task=meta.task,
        num_classes=module.num_classes,
        strategy=meta.task["strategy"],
        classes=classes,
        pretrained_from=meta.pretrained_from,
        **extra,
    )
    return write_export(
        out_dir,
        model,
        f"selfsup_finetune_{meta.task['strategy']['name']}",
        meta.mean,
        meta.std,
        metadata,
        extra_files,
        overwrite=overwrite,
    )


def load_detector(path: str | os.PathLike) -> nn.Module:
    """The whole detector (encoder, pyramid, head) of a detection export folder, as the torchvision
    ``FCOS`` / ``RetinaNet`` it was trained as, in eval mode: ``detector(images)`` takes float images
    ``[B, 3, S, S]`` in [0, 1] (``S`` = the recorded ``image_size``; it normalises them itself) and
    returns ``[{"boxes": [N, 4] xyxy pixels, "scores": [N], "labels": [N]}]``.

    Raises:
        FileNotFoundError: no such folder.
        CheckpointError: the folder is not a detection export, or its files do not fit together.
    """
    from safetensors.torch import load_file

    from selfsup.contract import CheckpointError
    from selfsup.export_format import METADATA_FILE
    from selfsup.finetune.tasks.detection import DetectorConfig, build_detection_head
    from selfsup.load import load_encoder

    path = Path(path)
    encoder = load_encoder(path)  # checks the folder; plain timm underneath
    meta = json.loads((path / METADATA_FILE).read_text()) if (path / METADATA_FILE).is_file() else {}
    spec = meta.get("detector")
    if not spec or not (path / spec.get("weights", DETECTOR_FILE)).is_file():
        task = (meta.get("task") or {}).get("name", "no fine-tune")
        raise CheckpointError(
            f"'{path}' is not a detection export (its {METADATA_FILE} has no 'detector' entry or {DETECTOR_FILE} is "
            f"missing; task: {task}). Export a detection fine-tune with `selfsup export CKPT --out DIR`, or load "
            "this folder's encoder with timm.create_model('local-dir:DIR', pretrained=True)."
        )
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
    detector = build_detection_head(
        encoder, spec["num_classes"], spec["image_size"], spec["mean"], spec["std"], DetectorConfig(**config)
    )
    weights = load_file(path / spec["weights"])
    try:
        result = detector.load_state_dict(weights, strict=False)
    except RuntimeError as err:
        raise CheckpointError(
            f"'{path / spec['weights']}' does not fit the recorded detector: {str(err).splitlines()[0]}"
        ) from None
    missing = [k for k in result.missing_keys if not k.startswith("backbone.encoder.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"'{path / spec['weights']}' does not fit the recorded detector: missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}. Re-create the export."
        )
    return detector.eval()
