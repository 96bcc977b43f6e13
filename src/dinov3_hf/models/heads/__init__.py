"""Task models: a DINOv3 backbone with the official heads (linear classifier, linear segmentation, linear / DPT
depth)."""

from .base import Dinov3HfHeadPreTrainedModel
from .classification import Dinov3HfForImageClassification
from .configuration import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfHeadConfig,
    Dinov3HfImageClassificationConfig,
    Dinov3HfSemanticSegmentationConfig,
)
from .depth import Dinov3HfForDepthEstimation
from .dpt import DPTHead, transformers_dpt_config
from .losses import SigLoss, logits_to_depth, sig_loss
from .segmentation import Dinov3HfForSemanticSegmentation

__all__ = [
    "DPTHead",
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
    "transformers_dpt_config",
]
