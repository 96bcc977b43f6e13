"""dino.txt: a DINOv3 ViT aligned with a text tower (`dinov3/eval/text/`), its tokenizer, zero-shot classification
and open-vocabulary segmentation."""

from .configuration import DINOTXT_PRESETS, Dinov3HfDinoTxtConfig
from .modeling import Dinov3HfDinoTxtModel, Dinov3HfDinoTxtOutput, Dinov3HfDinoTxtVisionOutput
from .tokenization import Dinov3HfDinoTxtTokenizer
from .zero_shot import DEFAULT_TEMPLATES, class_text_embeddings, open_vocab_segmentation, zero_shot_logits

__all__ = [
    "DEFAULT_TEMPLATES",
    "DINOTXT_PRESETS",
    "Dinov3HfDinoTxtConfig",
    "Dinov3HfDinoTxtModel",
    "Dinov3HfDinoTxtOutput",
    "Dinov3HfDinoTxtTokenizer",
    "Dinov3HfDinoTxtVisionOutput",
    "class_text_embeddings",
    "open_vocab_segmentation",
    "zero_shot_logits",
]
