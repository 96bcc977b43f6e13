"""Evaluation metrics that run offline: plain-torch functions, local `evaluate` modules and kNN evaluation."""

from .boundary import boundary_f_measure, boundary_f_score
from .correspondence import pck
from .detection import box_map, mask_map, panoptic_quality
from .functional import METRIC_NAMES, accuracy, depth_metrics, intersect_and_union, iou_from_areas, load_metric, mean_iou
from .knn import READOUTS, extract_cls_features, extract_features, knn_accuracy, knn_eval_on_dataset, pixel_features
from .linear_probe import linear_probe_accuracy
from .video import VideoSegmentationScores, region_similarity, video_j_and_f

__all__ = [
    "METRIC_NAMES",
    "READOUTS",
    "VideoSegmentationScores",
    "accuracy",
    "boundary_f_measure",
    "boundary_f_score",
    "box_map",
    "depth_metrics",
    "extract_cls_features",
    "extract_features",
    "intersect_and_union",
    "iou_from_areas",
    "knn_accuracy",
    "knn_eval_on_dataset",
    "linear_probe_accuracy",
    "load_metric",
    "mask_map",
    "mean_iou",
    "panoptic_quality",
    "pck",
    "pixel_features",
    "region_similarity",
    "video_j_and_f",
]
