"""The one place where dinov3_hf classes are registered with the transformers Auto classes."""

from __future__ import annotations

from transformers import AutoBackbone, AutoConfig, AutoModel

from .models.vit import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel


def register_auto_classes() -> None:
    """Register configs, models and backbones; safe to call more than once."""
    AutoConfig.register(Dinov3HfViTConfig.model_type, Dinov3HfViTConfig, exist_ok=True)
    AutoModel.register(Dinov3HfViTConfig, Dinov3HfViTModel, exist_ok=True)
    AutoBackbone.register(Dinov3HfViTConfig, Dinov3HfViTBackbone, exist_ok=True)
