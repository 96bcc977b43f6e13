"""Meta's released Plain-DETR COCO detector head (`dinov3_vit7b16_de`) on a DINOv3 ViT."""

from .configuration import Dinov3HfPlainDetrConfig
from .modeling import Dinov3HfForPlainDetrDetection, Dinov3HfPlainDetrOutput

__all__ = ["Dinov3HfForPlainDetrDetection", "Dinov3HfPlainDetrConfig", "Dinov3HfPlainDetrOutput"]
