"""The one place where dinov3_hf classes are registered with the transformers Auto classes, and where `convert/`
plugs transformers' checkpoint layouts into our models' `from_pretrained`."""

from __future__ import annotations

import os

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForImageClassification,
    AutoModelForObjectDetection,
    AutoModelForSemanticSegmentation,
    AutoModelForUniversalSegmentation,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
)
from transformers.models.auto.auto_factory import _BaseAutoBackboneClass, _BaseAutoModelClass
from transformers.models.auto.modeling_auto import MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES
from transformers.pipelines import PIPELINE_REGISTRY

from .convert import register_layout_loaders
from .models.convnext import Dinov3HfConvNextBackbone, Dinov3HfConvNextConfig, Dinov3HfConvNextModel
from .models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForImageClassification,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfImageClassificationConfig,
    Dinov3HfSemanticSegmentationConfig,
)
from .models.heads.adapter_mask2former import (
    Dinov3HfAdapterMask2FormerConfig,
    Dinov3HfAdapterMask2FormerForUniversalSegmentation,
)
from .models.heads.vit_adapter import Dinov3HfViTAdapterBackbone, Dinov3HfViTAdapterConfig
from .models.heads.plain_detr import Dinov3HfForPlainDetrDetection, Dinov3HfPlainDetrConfig
from .models.dinotxt import Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel, Dinov3HfDinoTxtTokenizer
from .models.pretrained import _model_type_of
from .models.vit import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel
from .pipelines import (
    IMAGE_FEATURE_EXTRACTION_TASK,
    OPEN_VOCAB_SEGMENTATION_TASK,
    Dinov3HfImageFeatureExtractionPipeline,
    OpenVocabularySegmentationPipeline,
)
from .processing import Dinov3HfDetectionImageProcessor, Dinov3HfDinoTxtProcessor, Dinov3HfImageProcessor

BACKBONES = (
    (Dinov3HfViTConfig, Dinov3HfViTModel, Dinov3HfViTBackbone),
    (Dinov3HfConvNextConfig, Dinov3HfConvNextModel, Dinov3HfConvNextBackbone),
)
BACKBONE_MODEL_TYPES = tuple(config_class.model_type for config_class, _, _ in BACKBONES)

# Task models: (config, the Auto class their pipeline loads through, model).
TASK_MODELS = (
    (Dinov3HfImageClassificationConfig, AutoModelForImageClassification, Dinov3HfForImageClassification),
    (Dinov3HfSemanticSegmentationConfig, AutoModelForSemanticSegmentation, Dinov3HfForSemanticSegmentation),
    (Dinov3HfDepthEstimationConfig, AutoModelForDepthEstimation, Dinov3HfForDepthEstimation),
    (Dinov3HfDinoTxtConfig, AutoModelForZeroShotImageClassification, Dinov3HfDinoTxtModel),
    (
        Dinov3HfAdapterMask2FormerConfig,
        AutoModelForUniversalSegmentation,
        Dinov3HfAdapterMask2FormerForUniversalSegmentation,
    ),
)


def _backbone_from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
    """`AutoBackbone.from_pretrained`, loading a local folder of one of our backbones without asking the Hub.

    transformers 5.23 (`_BaseAutoBackboneClass.from_pretrained`) first calls the Hub's `repo_exists` on the name, to
    tell Hub checkpoints from timm model names. That fails for every local folder: a path is not a repo id
    (HFValidationError), and a relative one like "my_model" needs the network (offline: OfflineModeIsEnabled).
    Everything else goes to transformers' method unchanged.
    """
    name = pretrained_model_name_or_path
    if os.path.isdir(name) and _model_type_of(name) in BACKBONE_MODEL_TYPES:
        return _BaseAutoModelClass.from_pretrained.__func__(cls, name, *model_args, **kwargs)
    return _BaseAutoBackboneClass.from_pretrained.__func__(cls, name, *model_args, **kwargs)


def register_auto_classes() -> None:
    """Register configs, models, backbones, task models, the image processor, dino.txt's tokenizer and processor,
    the open-vocabulary segmentation pipeline task, the image-feature-extraction pipeline with mixed-size batches,
    and the loaders of transformers' checkpoint layouts; safe to call more than once."""
    register_layout_loaders()
    AutoBackbone.from_pretrained = classmethod(_backbone_from_pretrained)
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
    # the ViT-Adapter exists only as a backbone (of the Mask2Former segmentor)
    AutoConfig.register(Dinov3HfViTAdapterConfig.model_type, Dinov3HfViTAdapterConfig, exist_ok=True)
    AutoBackbone.register(Dinov3HfViTAdapterConfig, Dinov3HfViTAdapterBackbone, exist_ok=True)
    # the Plain-DETR detector: its processor adds the detector's resize defaults and post_process_object_detection
    AutoConfig.register(Dinov3HfPlainDetrConfig.model_type, Dinov3HfPlainDetrConfig, exist_ok=True)
    AutoModelForObjectDetection.register(Dinov3HfPlainDetrConfig, Dinov3HfForPlainDetrDetection, exist_ok=True)
    # transformers' ObjectDetectionPipeline checks the model against this static name table (not the registry) and
    # logs an error for any other class; the Auto mapping looks registered configs up before the table
    MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES.setdefault(
        Dinov3HfPlainDetrConfig.model_type, Dinov3HfForPlainDetrDetection.__name__
    )
    AutoImageProcessor.register(
        Dinov3HfPlainDetrConfig,
        image_processor_classes={
            "torchvision": Dinov3HfDetectionImageProcessor, "pil": Dinov3HfDetectionImageProcessor
        },
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
    # The image-feature-extraction task keeps its Auto classes and default model; its pipeline class becomes our
    # subclass, which runs every other model as transformers' does. `register_pipeline` would also warn on each
    # import and make `pipe.save_pretrained` save our class as custom code; the task entry is set directly instead.
    PIPELINE_REGISTRY.supported_tasks[IMAGE_FEATURE_EXTRACTION_TASK] = {
        **PIPELINE_REGISTRY.supported_tasks[IMAGE_FEATURE_EXTRACTION_TASK],
        "impl": Dinov3HfImageFeatureExtractionPipeline,
    }
