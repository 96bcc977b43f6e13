"""Task models: a DINOv3 backbone with the official heads (linear classifier, linear segmentation, linear / DPT
depth)."""

from .adapter_mask2former import (
    Dinov3HfAdapterMask2FormerConfig,
    Dinov3HfAdapterMask2FormerForUniversalSegmentation,
)
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
from .ms_deform_attn import MSDeformAttn
from .segmentation import Dinov3HfForSemanticSegmentation
from .vit_adapter import Dinov3HfViTAdapterBackbone, Dinov3HfViTAdapterConfig

__all__ = [
    "DPTHead",
    "Dinov3HfAdapterMask2FormerConfig",
    "Dinov3HfAdapterMask2FormerForUniversalSegmentation",
    "Dinov3HfViTAdapterBackbone",
    "Dinov3HfViTAdapterConfig",
    "MSDeformAttn",
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
