"""dinov3_hf: DINOv3 models, checkpoint interop and training on the Hugging Face stack.

Importing the package registers its configs and models with the transformers Auto classes.
"""

from .models.vit import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel
from .registration import register_auto_classes

register_auto_classes()

__version__ = "0.1.0"

__all__ = ["Dinov3HfViTBackbone", "Dinov3HfViTConfig", "Dinov3HfViTModel", "__version__"]
