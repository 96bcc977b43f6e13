"""Behaviour shared by every dinov3_hf PreTrainedModel family."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import PreTrainedModel

# transformers' own model types for the same architectures; their checkpoints are converted on load.
TRANSFORMERS_MODEL_TYPES = ("dinov3_vit", "dinov3_convnext")


def _model_type_of(name_or_path: str | os.PathLike, **hub_kwargs) -> str | None:
    from transformers.utils import cached_file

    keep = {k: hub_kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only", "force_download") if k in hub_kwargs}
    path = Path(name_or_path)
    config = path / "config.json" if path.is_dir() else cached_file(
        str(name_or_path), "config.json", _raise_exceptions_for_missing_entries=False, **keep
    )
    if config is None or not Path(config).is_file():
        return None
    return json.loads(Path(config).read_text()).get("model_type")


class Dinov3HfPreTrainedModel(PreTrainedModel):
    """`from_pretrained` also accepts transformers' `dinov3_vit` / `dinov3_convnext` checkpoints (folder or Hub id)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        if os.path.isfile(str(pretrained_model_name_or_path)) or model_args:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        if _model_type_of(pretrained_model_name_or_path, **kwargs) in TRANSFORMERS_MODEL_TYPES:
            from ..convert import load_model  # models/ reaches convert/ only here, for foreign layouts

            return load_model(pretrained_model_name_or_path, model_class=cls, dtype=kwargs.pop("dtype", None), **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
