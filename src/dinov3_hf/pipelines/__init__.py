"""Custom pipeline tasks (registered with transformers' PIPELINE_REGISTRY in `dinov3_hf.registration`)."""

from .open_vocab_segmentation import OPEN_VOCAB_SEGMENTATION_TASK, OpenVocabularySegmentationPipeline

__all__ = ["OPEN_VOCAB_SEGMENTATION_TASK", "OpenVocabularySegmentationPipeline"]
