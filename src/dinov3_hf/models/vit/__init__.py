from .configuration import VIT_HUB_IDS, VIT_PRESETS, Dinov3HfViTConfig
from .modeling import Dinov3HfViTBackbone, Dinov3HfViTModel, Dinov3HfViTModelOutput, Dinov3HfViTPreTrainedModel

__all__ = [
    "VIT_HUB_IDS",
    "VIT_PRESETS",
    "Dinov3HfViTBackbone",
    "Dinov3HfViTConfig",
    "Dinov3HfViTModel",
    "Dinov3HfViTModelOutput",
    "Dinov3HfViTPreTrainedModel",
]
