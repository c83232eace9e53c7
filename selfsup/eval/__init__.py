"""Evaluation of encoders: kNN and linear probes of frozen features, online monitors, MAE reconstructions."""

from selfsup.eval.callbacks import KNNReport, encoder_knn_top1
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy, knn_scores
from selfsup.eval.linear_probe import LinearProbe, topk_accuracy, train_linear_probe
from selfsup.eval.online import KNNMonitor, OnlineLinearProbe
from selfsup.eval.reconstruction import ReconstructionGrid, reconstruction_grid

__all__ = [
    "KNNMonitor",
    "KNNReport",
    "LinearProbe",
    "OnlineLinearProbe",
    "ReconstructionGrid",
    "encoder_knn_top1",
    "extract_features",
    "knn_accuracy",
    "knn_scores",
    "reconstruction_grid",
    "topk_accuracy",
    "train_linear_probe",
]
