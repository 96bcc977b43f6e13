"""Checkpoints shipped inside the package."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "fmnist_vit"


def default_model_path() -> Path:
    """Folder of the package's default backbone (a `from_pretrained` folder; see model_cards/dinov3_hf_fmnist_vit.md)."""
    path = Path(__file__).parent / DEFAULT_MODEL
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"The shipped default model is missing from {path}; reinstall dinov3-hf.")
    return path
