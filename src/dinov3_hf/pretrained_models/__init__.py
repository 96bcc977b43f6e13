"""Checkpoints shipped inside the package."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoImageProcessor

from ..models.convnext import Dinov3HfConvNextBackbone, Dinov3HfConvNextConfig
from ..models.vit import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel
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


def load_task_backbone(
    spec: str | None, random_init: bool = False, seed: int = 0, **config_overrides: Any
) -> tuple[Dinov3HfViTBackbone | Dinov3HfConvNextBackbone, Dinov3HfImageProcessor]:
    """(AutoBackbone view, processor) of the backbone `spec` names (as in `load_backbone`; any checkpoint format) for
    a task model, its config fields set from `config_overrides` (e.g. `out_indices`, `pyramid_strides`).

    The checkpoint's weights are loaded unless `random_init` (then the seeded fresh init of the same architecture);
    parameters the checkpoint lacks (a new feature pyramid) keep their fresh init.
    """
    from ..convert import load_model

    source, processor = load_backbone(spec, seed)
    weights = source if isinstance(source, torch.nn.Module) else load_model(source)
    config = copy.deepcopy(weights.config)
    for key, value in config_overrides.items():
        if not hasattr(config, key):
            raise TypeError(f"{key!r} is not a field of {type(config).__name__}.")
        setattr(config, key, value)
    backbone_classes = {Dinov3HfViTConfig: Dinov3HfViTBackbone, Dinov3HfConvNextConfig: Dinov3HfConvNextBackbone}
    torch.manual_seed(seed)
    backbone = backbone_classes[type(config)](config)
    if not random_init:
        unexpected = backbone.load_state_dict(weights.state_dict(), strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"The backbone of {spec!r} has weights its backbone view lacks: {unexpected[:5]}.")
    return backbone.eval(), processor
