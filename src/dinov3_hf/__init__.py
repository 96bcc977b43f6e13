"""dinov3_hf: DINOv3 models, checkpoint interop and training on the Hugging Face stack.

Importing the package registers its configs, models, backbones, processors and the dino.txt tokenizer with the
transformers Auto classes, and the open-vocabulary segmentation pipeline task.
"""

from .models.convnext import Dinov3HfConvNextBackbone, Dinov3HfConvNextConfig, Dinov3HfConvNextModel
from .models.dinotxt import Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel, Dinov3HfDinoTxtTokenizer
from .models.vit import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel
from .processing import Dinov3HfDinoTxtProcessor, Dinov3HfImageProcessor
from .registration import register_auto_classes

register_auto_classes()

__version__ = "0.1.0"

__all__ = [
    "Dinov3HfConvNextBackbone",
    "Dinov3HfConvNextConfig",
    "Dinov3HfConvNextModel",
    "Dinov3HfDinoTxtConfig",
    "Dinov3HfDinoTxtModel",
    "Dinov3HfDinoTxtProcessor",
    "Dinov3HfDinoTxtTokenizer",
    "Dinov3HfImageProcessor",
    "Dinov3HfViTBackbone",
    "Dinov3HfViTConfig",
    "Dinov3HfViTModel",
    "__version__",
]
