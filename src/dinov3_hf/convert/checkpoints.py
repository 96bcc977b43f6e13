"""Checkpoint formats, detection, strict checking, loading and streaming conversion between formats.

Formats: `official` (Meta `.pth` state dicts), `hf` (transformers' `dinov3_vit` / `dinov3_convnext` folders and Hub
repos), `dinov3_hf` (our `save_pretrained` folders). Conversions go through our key layout as `{key: thunk}` maps, so
tensors are produced one at a time while writing and a large checkpoint is never held twice in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    DINOv3ConvNextConfig,
    DINOv3ViTConfig,
    DINOv3ViTImageProcessor,
    PretrainedConfig,
    PreTrainedModel,
)

from ..models.convnext import CONVNEXT_PRESETS, Dinov3HfConvNextConfig, Dinov3HfConvNextModel
from ..models.pretrained import register_layout_loader
from ..models.vit import VIT_PRESETS, Dinov3HfViTConfig, Dinov3HfViTModel
from ..processing import Dinov3HfImageProcessor
from . import convnext, vit
from .sources import HUB_KWARGS, CheckpointError, SafetensorsSource, load_pth, resolve_folder, safetensors_files

Thunks = dict[str, Callable[[], torch.Tensor]]
FORMATS = ("dinov3_hf", "hf", "official")
_OFFICIAL_SUFFIXES = (".pth", ".pt", ".bin")


@dataclass(frozen=True)
class Family:
    """A model family and the module that converts its checkpoints (see `convert/vit.py` for the contract)."""

    name: str
    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]
    hf_config_class: type[PretrainedConfig]
    hf_architecture: str
    presets: Mapping[str, dict]
    converter: ModuleType

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def hf_model_type(self) -> str:
        return self.hf_config_class.model_type


FAMILIES: list[Family] = [
    Family("vit", Dinov3HfViTConfig, Dinov3HfViTModel, DINOv3ViTConfig, "DINOv3ViTModel", VIT_PRESETS, vit),
    Family(
        "convnext", Dinov3HfConvNextConfig, Dinov3HfConvNextModel, DINOv3ConvNextConfig, "DINOv3ConvNextModel",
        CONVNEXT_PRESETS, convnext,
    ),
]


def register_family(family: Family) -> None:
    """Add a model family: its checkpoints convert, and our `from_pretrained` loads its transformers layout."""
    FAMILIES.append(family)
    register_layout_loaders()


def register_layout_loaders() -> None:
    """Make our models' `from_pretrained` load every family's transformers checkpoints (converted by `load_model`)."""
    for family in FAMILIES:
        register_layout_loader(family.hf_model_type, load_model)


def family_of(key: str | PretrainedConfig) -> Family:
    """The family of a preset name, a model_type (ours or transformers') or a config."""
    if isinstance(key, PretrainedConfig):
        key = key.model_type
    for family in FAMILIES:
        if key in family.presets or key in (family.model_type, family.hf_model_type):
            return family
    presets = [p for f in FAMILIES for p in f.presets]
    raise CheckpointError(f"Unknown architecture or model type {key!r}. Known presets: {', '.join(presets)}.")


class LazyState(Mapping):
    """A read-only state dict whose tensors are produced by thunks when indexed."""

    def __init__(self, thunks: Thunks):
        self._thunks = thunks

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._thunks[key]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._thunks)

    def __len__(self) -> int:
        return len(self._thunks)


# -- detection and strict checks -----------------------------------------------------------------------------------


def detect_format(src: str | os.PathLike, **hub_kwargs) -> str:
    """`official` for a `.pth`/`.pt`/`.bin` file, else the format named by the folder's (or Hub repo's) config.json."""
    path = Path(src)
    if path.is_file():
        if path.suffix in _OFFICIAL_SUFFIXES:
            return "official"
        raise CheckpointError(
            f"Unknown checkpoint format for file {path}: expected an official .pth state dict, or a model folder "
            "with config.json (ours or transformers')."
        )
    model_type = _read_model_type(resolve_folder(src, **hub_kwargs))
    for family in FAMILIES:
        if model_type == family.model_type:
            return "dinov3_hf"
        if model_type == family.hf_model_type:
            return "hf"
    known = [t for f in FAMILIES for t in (f.model_type, f.hf_model_type)]
    raise CheckpointError(f"Unknown checkpoint format: {src} has model_type {model_type!r}; expected one of {known}.")


def _read_model_type(folder: Path) -> str | None:
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(f"Unknown checkpoint format: {folder} has no config.json.")
    return json.loads(config.read_text()).get("model_type")


def check_state(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], what: str) -> None:
    """Raise a CheckpointError listing missing, unexpected and misshaped keys of a checkpoint."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(found[k])}, model {tuple(expected[k])}"
        for k in set(found) & set(expected)
        if tuple(found[k]) != tuple(expected[k])
    )
    if missing or unexpected or misshaped:
        parts = [f"{title} ({len(keys)}): {', '.join(keys)}" for title, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("misshaped keys", misshaped)) if keys]
        raise CheckpointError(f"The {what} does not fit the model.\n  " + "\n  ".join(parts))


def _meta_state(family: Family, config: PretrainedConfig) -> dict[str, torch.Tensor]:
    shapes = family.converter.expected_shapes(config)
    return {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}


def _foreign_shapes(family: Family, config: PretrainedConfig, to: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a checkpoint in format `to` for this config (computed on the meta device)."""
    meta = _meta_state(family, config)
    thunks = _from_ours(family, config, {k: (lambda t=t: t) for k, t in meta.items()}, to)
    return {k: tuple(fn().shape) for k, fn in thunks.items()}


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    if isinstance(state, SafetensorsSource):
        return {k: state.shape(k) for k in state}
    return {k: tuple(v.shape) for k, v in state.items()}


# -- reading -------------------------------------------------------------------------------------------------------


def read_checkpoint(
    src: str | os.PathLike, arch: str | None = None, **hub_kwargs
) -> tuple[Family, PretrainedConfig, Thunks]:
    """Any supported checkpoint -> (family, our config, {our key: thunk}), after a strict key and shape check."""
    fmt = detect_format(src, **hub_kwargs)
    if fmt == "official":
        if arch is None:
            raise CheckpointError(
                f"{src} is an official .pth state dict, which does not record its architecture; pass the preset with "
                f"--arch (or arch=...), one of: {', '.join(p for f in FAMILIES for p in f.presets)}."
            )
        family = family_of(arch)
        state = load_pth(src)
        config = family.converter.config_from_official(state, arch)
        check_state(_shapes(state), _foreign_shapes(family, config, "official"), f"official checkpoint {src}")
        return family, config, family.converter.official_to_ours(state, config)

    folder = resolve_folder(src, **hub_kwargs)
    state = SafetensorsSource(safetensors_files(folder))
    if fmt == "hf":
        hf_config = AutoConfig.from_pretrained(folder)
        family = family_of(hf_config)
        config = family.converter.config_from_hf(hf_config, str(src))
        found = {_normalise_hf_key(k): v for k, v in _shapes(state).items()}
        check_state(found, _foreign_shapes(family, config, "hf"), f"transformers checkpoint {src}")
        return family, config, family.converter.hf_to_ours(state, config)

    config = AutoConfig.from_pretrained(folder)
    family = family_of(config)
    check_state(_shapes(state), family.converter.expected_shapes(config), f"checkpoint {src}")
    return family, config, {k: (lambda k=k: state[k]) for k in state}


def _normalise_hf_key(key: str) -> str:
    return key[len("model.") :] if key.startswith(("model.layer.", "model.stages.")) else key


def load_model(
    src: str | os.PathLike,
    arch: str | None = None,
    model_class: type[PreTrainedModel] | None = None,
    dtype: torch.dtype | None = None,
    **kwargs,
) -> PreTrainedModel:
    """Build our model from a checkpoint in any format, in eval mode.

    The model is created on the meta device and the tensors are assigned, so no second copy of the weights exists.
    `model_class` (e.g. a Backbone subclass) must belong to the checkpoint's family. `kwargs` are Hub arguments
    (revision, cache_dir, token, local_files_only, force_download); any other keyword sets that config field
    (e.g. `out_indices=[3, 6, 9, 12]`). Modules that `model_class` adds to the family's model (the ViT backbone's
    feature pyramid, with `pyramid_strides=...`) are in no checkpoint and get the model's fresh initialisation.
    """
    hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
    family, config, thunks = read_checkpoint(src, arch, **hub_kwargs)
    for key, value in kwargs.items():
        if not hasattr(config, key):
            raise TypeError(
                f"Unexpected argument {key!r}: neither a Hub argument ({', '.join(HUB_KWARGS)}) nor a field of "
                f"{type(config).__name__}."
            )
        setattr(config, key, value)
    model_class = model_class or family.model_class
    if not issubclass(model_class, family.model_class):
        raise CheckpointError(f"{src} holds a {family.name} checkpoint, which {model_class.__name__} cannot load.")
    with torch.device("meta"):
        model = model_class(config)
        family_model = family.model_class(config)
    # modules the class adds to the family's model (the backbone's feature pyramid) are in no checkpoint: fresh init
    fresh = {}
    for name, module in model.named_children():
        if not hasattr(family_model, name):
            module.to_empty(device="cpu").apply(model._init_weights)
            fresh.update({f"{name}.{key}": tensor for key, tensor in module.state_dict().items()})

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor

    progress = tqdm(thunks.items(), desc="Loading weights", unit="tensor", leave=False)
    state = {key: cast(thunk()) for key, thunk in progress}
    state.update({key: cast(tensor) for key, tensor in fresh.items()})
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


# -- writing -------------------------------------------------------------------------------------------------------


def _from_ours(family: Family, config: PretrainedConfig, thunks: Thunks, to: str) -> Thunks:
    if to == "dinov3_hf":
        return thunks
    if to == "hf":
        return family.converter.ours_to_hf(LazyState(thunks), config)
    if to == "official":
        return family.converter.ours_to_official(LazyState(thunks), config)
    raise CheckpointError(f"Unknown target format {to!r}; choose one of {', '.join(FORMATS)}.")


def write_checkpoint(
    family: Family,
    config: PretrainedConfig,
    thunks: Thunks,
    dst: str | os.PathLike,
    to: str = "dinov3_hf",
    max_shard_bytes: int = 5 * 1024**3,
) -> Path:
    """Write our-layout thunks as format `to`: a folder (config.json + safetensors shards) or an official `.pth`.

    Folders are written shard by shard, so at most one shard of converted tensors is in memory.
    Returns the written folder or file.
    """
    target = _from_ours(family, config, thunks, to)
    dst = Path(dst)
    if to == "official":
        path = dst if dst.suffix in _OFFICIAL_SUFFIXES else dst / "model.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: fn().contiguous() for k, fn in tqdm(target.items(), desc="Converting", unit="tensor")}
        torch.save(state, path)
        return path

    dst.mkdir(parents=True, exist_ok=True)
    out_config = family.converter.config_to_hf(config) if to == "hf" else config
    out_config.architectures = [family.hf_architecture if to == "hf" else family.model_class.__name__]
    out_config.save_pretrained(dst)
    _processor_for(config, to).save_pretrained(dst)
    _write_shards(target, dst, max_shard_bytes)
    return dst


def _processor_for(config: PretrainedConfig, to: str):
    """The image processor saved next to converted weights, so pipelines load the folder as it is."""
    if to == "hf":
        return DINOv3ViTImageProcessor(image_mean=list(config.image_mean), image_std=list(config.image_std))
    return Dinov3HfImageProcessor.for_model_config(config)


def _write_shards(target: Thunks, dst: Path, max_shard_bytes: int) -> None:
    shards: list[dict[str, str]] = []
    current: dict[str, torch.Tensor] = {}
    size, total = 0, 0

    def flush() -> None:
        nonlocal current, size
        if current:
            name = f"shard-{len(shards):05d}.tmp"
            save_file(current, str(dst / name), metadata={"format": "pt"})
            shards.append({k: name for k in current})
            current, size = {}, 0

    for key, fn in tqdm(target.items(), desc="Converting", unit="tensor"):
        tensor = fn().contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            flush()
        current[key] = tensor
        size += nbytes
        total += nbytes
    flush()
    for old in dst.glob("model*.safetensors*"):
        old.unlink()
    if len(shards) == 1:
        (dst / next(iter(shards[0].values()))).rename(dst / "model.safetensors")
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        final = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (dst / next(iter(shard.values()))).rename(dst / final)
        weight_map.update({k: final for k in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def export_model(model: PreTrainedModel, dst: str | os.PathLike, to: str = "dinov3_hf") -> Path:
    """Save one of our models as format `to` ("dinov3_hf", "hf" or "official")."""
    family = family_of(model.config)
    state = model.state_dict()
    return write_checkpoint(family, model.config, {k: (lambda t=t: t.detach()) for k, t in state.items()}, dst, to)


def convert_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, arch: str | None = None, to: str = "dinov3_hf", **hub_kwargs
) -> Path:
    """Convert a checkpoint in any format to format `to`, streaming tensor by tensor."""
    if to not in FORMATS:
        raise CheckpointError(f"Unknown target format {to!r}; choose one of {', '.join(FORMATS)}.")
    family, config, thunks = read_checkpoint(src, arch, **hub_kwargs)
    return write_checkpoint(family, config, thunks, dst, to)
