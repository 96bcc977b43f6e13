"""Behaviour shared by every dinov3_hf PreTrainedModel family, and the one point where other checkpoint layouts plug
into `from_pretrained`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from transformers import PreTrainedModel
from transformers.utils import cached_file

from ..common import NORMALIZATION


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


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says what is wrong."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path that does not exist (caught as a CheckpointError or as a FileNotFoundError)."""


# Loaders of checkpoints in another key layout, by the `model_type` of their config.json:
# `loader(name_or_path, model_class=cls, dtype=dtype, **kwargs)` returns a `model_class` in eval mode.
# Importing dinov3_hf registers `convert.load_model` for transformers' `dinov3_vit` / `dinov3_convnext` here
# (`registration.register_auto_classes` calls `convert.register_layout_loaders`).
LayoutLoader = Callable[..., PreTrainedModel]
LAYOUT_LOADERS: dict[str, LayoutLoader] = {}


def register_layout_loader(model_type: str, loader: LayoutLoader) -> None:
    """Make `from_pretrained` load checkpoints whose config.json has this `model_type` through `loader`."""
    LAYOUT_LOADERS[model_type] = loader


def check_local_path(name_or_path: str | os.PathLike) -> None:
    """Raise CheckpointNotFoundError naming `name_or_path` when it does not exist and is a `Path` or cannot be a Hub
    repo id ("name" or "namespace/name"), so that a missing folder is reported as missing, not looked up on the Hub."""
    if os.path.exists(name_or_path):
        return
    if isinstance(name_or_path, str):
        try:
            validate_repo_id(name_or_path)
            return
        except HFValidationError:
            pass
    raise CheckpointNotFoundError(
        f"{str(name_or_path)!r} does not exist (looked for {Path(name_or_path).absolute()}), and it is not a Hub repo "
        "id ('name' or 'namespace/name'). Check the path."
    )


def open_safetensors(path: str | os.PathLike) -> safe_open:
    """`safe_open(path)` (header read, tensors on access); a CheckpointError naming the file if it is unreadable."""
    try:
        return safe_open(str(path), framework="pt")
    except SafetensorError as err:
        raise CheckpointError(
            f"Cannot read the weights file {path} ({err}): it is truncated or corrupt, e.g. by an interrupted save, "
            "copy or download. Save or download it again."
        ) from None


def _config_file(name_or_path: str | os.PathLike | None, **hub_kwargs) -> Path | None:
    """The config.json of a folder, or of a Hub repo (downloaded or in the HF cache); None without a path or a config."""
    if name_or_path is None:
        return None
    check_local_path(name_or_path)
    keep = {k: hub_kwargs[k] for k in HUB_KWARGS if k in hub_kwargs}
    path = Path(name_or_path)
    config = path / "config.json" if path.is_dir() else cached_file(
        str(name_or_path), "config.json", _raise_exceptions_for_missing_entries=False, **keep
    )
    return Path(config) if config is not None and Path(config).is_file() else None


def _model_type_of(name_or_path: str | os.PathLike | None, **hub_kwargs) -> str | None:
    """The `model_type` in the config.json of a folder or Hub repo; None without a path or a config.json."""
    config = _config_file(name_or_path, **hub_kwargs)
    return None if config is None else json.loads(config.read_text()).get("model_type")


class Dinov3HfPreTrainedModel(PreTrainedModel):
    """`from_pretrained` also loads the checkpoint layouts in `LAYOUT_LOADERS` (transformers' `dinov3_vit` /
    `dinov3_convnext`, folder or Hub id), converted on load.

    For those, keyword arguments are Hub arguments, `dtype`, or config fields to override (e.g. `out_indices`).
    A path that does not exist and cannot be a Hub repo id raises CheckpointNotFoundError (a FileNotFoundError).
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        path = pretrained_model_name_or_path
        if path is not None:
            check_local_path(path)
        if path is not None and not model_args and not os.path.isfile(path):
            loader = LAYOUT_LOADERS.get(_model_type_of(path, **kwargs))
            if loader is not None:
                return loader(path, model_class=cls, dtype=kwargs.pop("dtype", None), **kwargs)
        try:
            return super().from_pretrained(path, *model_args, **kwargs)
        except SafetensorError as err:  # its message does not name the file: find it
            config = _config_file(path, **kwargs)
            for file in sorted(config.parent.glob("*.safetensors")) if config is not None else ():
                open_safetensors(file)  # raises, naming the unreadable file
            raise CheckpointError(f"A weights file of {path} is unreadable ({err}); save or download it again.") from None
