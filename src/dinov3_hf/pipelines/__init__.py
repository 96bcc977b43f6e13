"""Pipeline tasks: our own (registered with transformers' PIPELINE_REGISTRY in `dinov3_hf.registration`) and
transformers' `image-feature-extraction` with mixed-size batches."""

from .image_feature_extraction import IMAGE_FEATURE_EXTRACTION_TASK, Dinov3HfImageFeatureExtractionPipeline
from .open_vocab_segmentation import OPEN_VOCAB_SEGMENTATION_TASK, OpenVocabularySegmentationPipeline

__all__ = [
    "IMAGE_FEATURE_EXTRACTION_TASK",
    "OPEN_VOCAB_SEGMENTATION_TASK",
    "Dinov3HfImageFeatureExtractionPipeline",
    "OpenVocabularySegmentationPipeline",
]
