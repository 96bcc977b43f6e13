"""Image preprocessing for the DINOv3 backbones."""

from __future__ import annotations

from .image_processing import SUPPORTED_PIL_MODES, Dinov3HfImageProcessor, snap_to_multiple, target_size


__all__ = [
    "SUPPORTED_PIL_MODES",
    "Dinov3HfImageProcessor",
    "snap_to_multiple",
    "target_size",
]
