"""Checkpoints shipped inside the package."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoImageProcessor

from ..models.vit import Dinov3HfViTConfig, Dinov3HfViTModel
from ..processing import Dinov3HfImageProcessor

DEFAULT_MODEL = "fmnist_vit"


def default_model_path() -> Path:
    """Folder of the package's default backbone (a `from_pretrained` folder; see model_cards/dinov3_hf_fmnist_vit.md)."""
    path = Path(__file__).parent / DEFAULT_MODEL
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"The shipped default model is missing from {path}; reinstall dinov3-hf.")
    return path


def load_backbone(
    spec: str | None, seed: int = 0
) -> tuple[Dinov3HfViTModel | str, Dinov3HfImageProcessor]:
    """(backbone model or checkpoint path, processor) for the examples: `None` is the shipped default model,
    "random" a tiny random ViT with 4-pixel patches (for smoke tests), anything else a checkpoint folder or Hub id."""
    if spec == "random":
        torch.manual_seed(seed)
        config = Dinov3HfViTConfig.from_preset(
            "vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2, patch_size=4, layerscale_init=0.1
        )
        return Dinov3HfViTModel(config).eval(), Dinov3HfImageProcessor.for_model_config(config)
    if spec is None:
        spec = str(default_model_path())
    try:
        processor = AutoImageProcessor.from_pretrained(spec)
    except (OSError, ValueError):
        processor = None
    if not isinstance(processor, Dinov3HfImageProcessor):
        processor = Dinov3HfImageProcessor.for_model_config(AutoConfig.from_pretrained(spec))
    return spec, processor
