"""Evaluation of frozen encoders: kNN (and, later, linear probes) on held-out data."""

from selfsup.eval.callbacks import KNNReport, encoder_knn_top1
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy, knn_scores

__all__ = ["KNNReport", "encoder_knn_top1", "extract_features", "knn_accuracy", "knn_scores"]
