"""Evaluation metrics that run offline."""

from .knn import extract_cls_features, knn_accuracy, knn_eval_on_dataset

__all__ = ["extract_cls_features", "knn_accuracy", "knn_eval_on_dataset"]
