from .configuration import CONVNEXT_HUB_IDS, CONVNEXT_PRESETS, Dinov3HfConvNextConfig
from .modeling import (
    Dinov3HfConvNextBackbone,
    Dinov3HfConvNextModel,
    Dinov3HfConvNextModelOutput,
    Dinov3HfConvNextPreTrainedModel,
)

__all__ = [
    "CONVNEXT_HUB_IDS",
    "CONVNEXT_PRESETS",
    "Dinov3HfConvNextBackbone",
    "Dinov3HfConvNextConfig",
    "Dinov3HfConvNextModel",
    "Dinov3HfConvNextModelOutput",
    "Dinov3HfConvNextPreTrainedModel",
]
