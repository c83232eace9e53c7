"""Evaluation of encoders: kNN on held-out data, and what MAE reconstructs."""

from selfsup.eval.callbacks import KNNReport, encoder_knn_top1
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy, knn_scores
from selfsup.eval.reconstruction import ReconstructionGrid, reconstruction_grid

__all__ = [
    "KNNReport",
    "ReconstructionGrid",
    "encoder_knn_top1",
    "extract_features",
    "knn_accuracy",
    "knn_scores",
    "reconstruction_grid",
]
