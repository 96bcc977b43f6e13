"""The one place where dinov3_hf classes are registered with the transformers Auto classes."""

from __future__ import annotations

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .models.convnext import Dinov3HfConvNextBackbone, Dinov3HfConvNextConfig, Dinov3HfConvNextModel
from .models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForImageClassification,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfImageClassificationConfig,
    Dinov3HfSemanticSegmentationConfig,
)
from .models.dinotxt import Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel, Dinov3HfDinoTxtTokenizer
from .models.vit import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel
from .pipelines import OPEN_VOCAB_SEGMENTATION_TASK, OpenVocabularySegmentationPipeline
from .processing import Dinov3HfDinoTxtProcessor, Dinov3HfImageProcessor

BACKBONES = (
    (Dinov3HfViTConfig, Dinov3HfViTModel, Dinov3HfViTBackbone),
    (Dinov3HfConvNextConfig, Dinov3HfConvNextModel, Dinov3HfConvNextBackbone),
)

# Task models: (config, the Auto class their pipeline loads through, model).
TASK_MODELS = (
    (Dinov3HfImageClassificationConfig, AutoModelForImageClassification, Dinov3HfForImageClassification),
    (Dinov3HfSemanticSegmentationConfig, AutoModelForSemanticSegmentation, Dinov3HfForSemanticSegmentation),
    (Dinov3HfDepthEstimationConfig, AutoModelForDepthEstimation, Dinov3HfForDepthEstimation),
    (Dinov3HfDinoTxtConfig, AutoModelForZeroShotImageClassification, Dinov3HfDinoTxtModel),
)


def register_auto_classes() -> None:
    """Register configs, models, backbones, task models, the image processor, dino.txt's tokenizer and processor,
    and the open-vocabulary segmentation pipeline task; safe to call more than once."""
    for config_class, model_class, backbone_class in BACKBONES:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoBackbone.register(config_class, backbone_class, exist_ok=True)
        # one processor class serves both backends, so `backend=` makes no difference
        AutoImageProcessor.register(
            config_class,
            image_processor_classes={"torchvision": Dinov3HfImageProcessor, "pil": Dinov3HfImageProcessor},
            exist_ok=True,
        )
    for config_class, auto_class, model_class in TASK_MODELS:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        auto_class.register(config_class, model_class, exist_ok=True)
        AutoImageProcessor.register(
            config_class,
            image_processor_classes={"torchvision": Dinov3HfImageProcessor, "pil": Dinov3HfImageProcessor},
            exist_ok=True,
        )
    AutoModel.register(Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel, exist_ok=True)
    AutoTokenizer.register(Dinov3HfDinoTxtConfig, tokenizer_class=Dinov3HfDinoTxtTokenizer, exist_ok=True)
    AutoProcessor.register(Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtProcessor, exist_ok=True)
    if OPEN_VOCAB_SEGMENTATION_TASK not in PIPELINE_REGISTRY.get_supported_tasks():  # re-registering warns
        PIPELINE_REGISTRY.register_pipeline(
            OPEN_VOCAB_SEGMENTATION_TASK,
            pipeline_class=OpenVocabularySegmentationPipeline,
            pt_model=AutoModelForZeroShotImageClassification,
            type="multimodal",
        )
