"""Checkpoint interop: official Meta `.pth`, transformers `dinov3_vit` / `dinov3_convnext`, and our own format.

This package is the only place that knows foreign key names.
"""

from ..models.pretrained import CheckpointNotFoundError
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
    register_layout_loaders,
    write_checkpoint,
)
from .heads import (
    OFFICIAL_HEADS,
    build_official_head_model,
    load_official_head,
    official_head_config,
    official_head_shapes,
    official_head_to_ours,
    ours_to_official_head,
    save_official_head,
)
from .sources import CheckpointError, load_pth

__all__ = [
    "FAMILIES",
    "FORMATS",
    "OFFICIAL_HEADS",
    "CheckpointError",
    "CheckpointNotFoundError",
    "Family",
    "check_state",
    "convert_checkpoint",
    "detect_format",
    "export_model",
    "build_official_head_model",
    "family_of",
    "load_model",
    "load_official_head",
    "load_pth",
    "official_head_config",
    "official_head_shapes",
    "official_head_to_ours",
    "ours_to_official_head",
    "read_checkpoint",
    "register_family",
    "register_layout_loaders",
    "save_official_head",
    "write_checkpoint",
]
