"""Behaviour shared by every dinov3_hf PreTrainedModel family."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import PreTrainedModel

# Input normalisation (mean, std) per pretraining dataset: web images (LVD-1689M) and satellite images (SAT-493M).
NORMALIZATION = {
    "lvd1689m": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "sat493m": ((0.430, 0.411, 0.296), (0.213, 0.156, 0.143)),
}
PRETRAINING_DATA = tuple(NORMALIZATION)


class PretrainingDataMixin:
    """Config mixin: `image_mean` / `image_std` follow the config's `pretraining_data`."""

    pretraining_data: str

    @property
    def image_mean(self) -> tuple[float, float, float]:
        return NORMALIZATION[self.pretraining_data][0]

    @property
    def image_std(self) -> tuple[float, float, float]:
        return NORMALIZATION[self.pretraining_data][1]


# Keyword arguments that locate a Hub repository (passed on to huggingface_hub).
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download")
# transformers' own model types for the same architectures; their checkpoints are converted on load.
TRANSFORMERS_MODEL_TYPES = ("dinov3_vit", "dinov3_convnext")


def _model_type_of(name_or_path: str | os.PathLike, **hub_kwargs) -> str | None:
    from transformers.utils import cached_file

    keep = {k: hub_kwargs[k] for k in HUB_KWARGS if k in hub_kwargs}
    path = Path(name_or_path)
    config = path / "config.json" if path.is_dir() else cached_file(
        str(name_or_path), "config.json", _raise_exceptions_for_missing_entries=False, **keep
    )
    if config is None or not Path(config).is_file():
        return None
    return json.loads(Path(config).read_text()).get("model_type")


class Dinov3HfPreTrainedModel(PreTrainedModel):
    """`from_pretrained` also accepts transformers' `dinov3_vit` / `dinov3_convnext` checkpoints (folder or Hub id).

    For those, keyword arguments are Hub arguments, `dtype`, or config fields to override (e.g. `out_indices`).
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        if os.path.isfile(str(pretrained_model_name_or_path)) or model_args:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        if _model_type_of(pretrained_model_name_or_path, **kwargs) in TRANSFORMERS_MODEL_TYPES:
            from ..convert import load_model  # models/ reaches convert/ only here, for foreign layouts

            return load_model(pretrained_model_name_or_path, model_class=cls, dtype=kwargs.pop("dtype", None), **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
