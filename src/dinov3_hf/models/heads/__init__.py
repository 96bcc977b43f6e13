"""Task models: a DINOv3 backbone with the official linear heads for classification, segmentation and depth."""

from .base import Dinov3HfHeadPreTrainedModel
from .classification import Dinov3HfForImageClassification
from .configuration import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfHeadConfig,
    Dinov3HfImageClassificationConfig,
    Dinov3HfSemanticSegmentationConfig,
)
from .depth import Dinov3HfForDepthEstimation
from .losses import SigLoss, logits_to_depth, sig_loss
from .segmentation import Dinov3HfForSemanticSegmentation

__all__ = [
    "Dinov3HfDepthEstimationConfig",
    "Dinov3HfForDepthEstimation",
    "Dinov3HfForImageClassification",
    "Dinov3HfForSemanticSegmentation",
    "Dinov3HfHeadConfig",
    "Dinov3HfHeadPreTrainedModel",
    "Dinov3HfImageClassificationConfig",
    "Dinov3HfSemanticSegmentationConfig",
    "SigLoss",
    "logits_to_depth",
    "sig_loss",
]
