"""Image preprocessing for the DINOv3 backbones, and the dino.txt image + text processor."""

from __future__ import annotations

from .dinotxt_processing import Dinov3HfDinoTxtProcessor
from .image_processing import SUPPORTED_PIL_MODES, Dinov3HfImageProcessor, snap_to_multiple, target_size
from .object_detection import Dinov3HfDetectionImageProcessor, post_process_object_detection


__all__ = [
    "Dinov3HfDetectionImageProcessor",
    "Dinov3HfDinoTxtProcessor",
    "post_process_object_detection",
    "SUPPORTED_PIL_MODES",
    "Dinov3HfImageProcessor",
    "snap_to_multiple",
    "target_size",
]
