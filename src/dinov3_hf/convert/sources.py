"""Reading checkpoints lazily and safely: official `.pth` files, safetensors files and folders, Hub repositories."""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ..models.pretrained import HUB_KWARGS, CheckpointError, check_local_path, open_safetensors

# Wrappers under which official training checkpoints keep the backbone (`{"teacher": {"backbone.x": ...}}`).
_WRAPPER_KEYS = ("teacher", "model", "state_dict")
_PREFIXES = ("module.", "backbone.")


class SafetensorsSource(Mapping):
    """Read-on-access mapping over one or more safetensors files (tensors are loaded when indexed)."""

    def __init__(self, files: list[str | os.PathLike]):
        self._handles = [open_safetensors(f) for f in files]
        self._where = {key: h for h in self._handles for key in h.keys()}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._where[key].get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._where[key].get_slice(key).get_shape())


def rename_key(key: str, renames: list[tuple[str, str]]) -> str | None:
    """`key` renamed by the first (pattern, replacement) regex pair whose pattern matches it whole; None if none does."""
    for pattern, target in renames:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, target, key)
    return None


def load_pth(path: str | os.PathLike, backbone_only: bool = True) -> dict[str, torch.Tensor]:
    """Load a `.pth` state dict memory-mapped with `weights_only=True`; refuse pickles that would run code.

    Accepts a bare state dict, or one under "teacher" / "model" / "state_dict" with "module." / "backbone." prefixes.
    backbone_only: a state dict with "backbone." keys is a training snapshot, of which only the backbone is kept;
    False keeps every key (a detector file whose keys may include its backbone's).
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refusing to load {path}: it needs pickle code execution, which `weights_only=True` forbids "
            f"({str(err).splitlines()[0]}). Official DINOv3 checkpoints are plain state dicts; re-save this one as "
            "a state dict of tensors (`torch.save(model.state_dict(), path)`) from a trusted environment."
        ) from None
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise CheckpointError(f"Could not read {path} as a PyTorch checkpoint: {err}") from None
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(obj).__name__}).")
    if backbone_only and any(k.startswith("backbone.") for k in obj):  # training snapshot: keep the backbone only
        obj = {k: v for k, v in obj.items() if k.startswith(("backbone.", "module.backbone."))}
    for prefix in _PREFIXES:
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a saved model folder (single file or sharded with an index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise CheckpointError(f"No model.safetensors (or sharded index) in {folder}.")


def resolve_folder(name_or_path: str | os.PathLike, **hub_kwargs) -> Path:
    """A local folder as is, or a Hub repo id downloaded (or found in the HF cache) as a snapshot folder."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; expected a model folder or a Hub repo id.")
    check_local_path(name_or_path)
    from huggingface_hub import snapshot_download

    allowed = ["config.json", "*.safetensors", "model.safetensors.index.json", "preprocessor_config.json"]
    keep = {k: hub_kwargs[k] for k in HUB_KWARGS if k in hub_kwargs}
    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=allowed, **keep))
    except Exception as err:  # network, auth and not-found errors all end here
        raise CheckpointError(
            f"Could not find {name_or_path!r} as a local folder, in the Hugging Face cache or on the Hub: {err}"
        ) from None
