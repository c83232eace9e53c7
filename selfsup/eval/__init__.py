"""Evaluation of encoders: kNN and linear probes of frozen features, online monitors, and the
pictures people look at (MAE reconstructions, attention maps, detections, curves).

Names load on first use: importing one evaluation tool does not import them all."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KNNReport": "selfsup.eval.callbacks",
    "encoder_knn_top1": "selfsup.eval.callbacks",
    "extract_features": "selfsup.eval.features",
    "knn_accuracy": "selfsup.eval.knn",
    "knn_scores": "selfsup.eval.knn",
    "LinearProbe": "selfsup.eval.linear_probe",
    "topk_accuracy": "selfsup.eval.linear_probe",
    "train_linear_probe": "selfsup.eval.linear_probe",
    "KNNMonitor": "selfsup.eval.online",
    "OnlineLinearProbe": "selfsup.eval.online",
    "ReconstructionGrid": "selfsup.eval.reconstruction",
    "reconstruction_grid": "selfsup.eval.reconstruction",
    "AttentionMaps": "selfsup.eval.attention_callback",
    "class_token_attention": "selfsup.eval.class_attention",
    "save_attention_maps": "selfsup.eval.attention_figure",
    "DetectionMAP": "selfsup.eval.detection",
    "DetectionGrid": "selfsup.eval.detection",
    "save_detection_grid": "selfsup.eval.detection",
    "probe": "selfsup.eval.probe",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selfsup.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
