"""Checkpoint interop: official Meta `.pth`, transformers `dinov3_vit` / `dinov3_convnext`, and our own format.

This package is the only place that knows foreign key names.
"""

from .checkpoints import (
    FAMILIES,
    FORMATS,
    Family,
    check_state,
    convert_checkpoint,
    detect_format,
    export_model,
    family_of,
    load_model,
    read_checkpoint,
    register_family,
    write_checkpoint,
)
from .sources import CheckpointError, load_pth

__all__ = [
    "FAMILIES",
    "FORMATS",
    "CheckpointError",
    "Family",
    "check_state",
    "convert_checkpoint",
    "detect_format",
    "export_model",
    "family_of",
    "load_model",
    "load_pth",
    "read_checkpoint",
    "register_family",
    "write_checkpoint",
]
