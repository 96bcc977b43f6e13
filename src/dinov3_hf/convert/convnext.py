"""ConvNeXt checkpoint formats: official Meta keys (ours plus the `norms.3` alias), transformers' `dinov3_convnext`.

Same contract as `convert/vit.py`: every converter maps a source state dict to `{target key: thunk}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from transformers import DINOv3ConvNextConfig

from ..models.convnext.configuration import CONVNEXT_PRESETS, NUM_STAGES, Dinov3HfConvNextConfig
from .sources import CheckpointError, rename_key

Thunks = dict[str, Callable[[], torch.Tensor]]

# The official model registers its final norm twice: `norm` and `norms.3` (norms = [Identity] * 3 + [norm]).
_ALIAS = {"norms.3.weight": "norm.weight", "norms.3.bias": "norm.bias"}
_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.")


def stage_depths(keys) -> list[int]:
    """Blocks per stage: 1 + the largest j among `stages.s.j.*` keys (0 for a stage without blocks)."""
    depths = [0] * NUM_STAGES
    for key in keys:
        if (m := _BLOCK.match(key)) is not None and int(m.group(1)) < NUM_STAGES:
            stage, block = int(m.group(1)), int(m.group(2))
            depths[stage] = max(depths[stage], block + 1)
    return depths


# -- official <-> ours ----------------------------------------------------------------------------------------------


def config_from_official(state: Mapping[str, torch.Tensor], arch: str) -> Dinov3HfConvNextConfig:
    """The preset `arch` with its depths read from the keys; widths and input channels are checked against shapes."""
    preset = dict(CONVNEXT_PRESETS[arch])
    depths = stage_depths(state.keys())
    if any(d > p for d, p in zip(depths, preset["depths"])):
        raise CheckpointError(
            f"The checkpoint has {depths} blocks per stage but preset {arch!r} has {preset['depths']}."
        )
    config = Dinov3HfConvNextConfig(**{**preset, "depths": depths})

    convs = ["downsample_layers.0.0.weight"] + [f"downsample_layers.{i}.1.weight" for i in range(1, NUM_STAGES)]
    found: dict[str, object] = {}
    if convs[0] in state:
        found["num_channels"] = state[convs[0]].shape[1]
    if all(key in state for key in convs):  # a missing key is reported by the strict key check
        found["hidden_sizes"] = [state[key].shape[0] for key in convs]
    wrong = [
        f"{name}: checkpoint {value}, preset {getattr(config, name)}"
        for name, value in found.items()
        if value != getattr(config, name)
    ]
    if wrong:
        raise CheckpointError(
            f"The checkpoint does not match preset {arch!r}: " + "; ".join(wrong) + ". Pick the preset of this "
            f"checkpoint with --arch (one of {', '.join(CONVNEXT_PRESETS)})."
        )
    return config


def official_to_ours(state: Mapping[str, torch.Tensor], config: Dinov3HfConvNextConfig) -> Thunks:
    """Identity, minus `norms.3.*`, which must equal `norm.*` (checked here)."""
    for alias, key in _ALIAS.items():
        if alias in state and key in state and not torch.equal(state[alias], state[key]):
            diff = (state[alias].float() - state[key].float()).abs().max().item()
            raise CheckpointError(
                f"The checkpoint's {alias} differs from {key} (max abs diff {diff:.3g}); in the official ConvNeXt they "
                "are the same module, so this file was edited or is not an official DINOv3 ConvNeXt state dict."
            )
    return {key: (lambda k=key: state[k]) for key in state if key not in _ALIAS}


def ours_to_official(state: Mapping[str, torch.Tensor], config: Dinov3HfConvNextConfig) -> Thunks:
    """Identity, plus `norms.3.*` as copies of `norm.*` (copies: safetensors and torch.save see no shared storage)."""
    thunks: Thunks = {key: (lambda k=key: state[k]) for key in state}
    thunks.update({alias: (lambda k=key: state[k].clone()) for alias, key in _ALIAS.items()})
    return thunks


# -- transformers (`dinov3_convnext`) <-> ours --------------------------------------------------------------------

_HF_RENAMES = [  # (ours, transformers on disk) regex pairs, all one-to-one
    (r"downsample_layers\.(\d+)\.([01])\.(weight|bias)", r"stages.\1.downsample_layers.\2.\3"),
    (r"stages\.(\d+)\.(\d+)\.dwconv\.(weight|bias)", r"stages.\1.layers.\2.depthwise_conv.\3"),
    (r"stages\.(\d+)\.(\d+)\.norm\.(weight|bias)", r"stages.\1.layers.\2.layer_norm.\3"),
    (r"stages\.(\d+)\.(\d+)\.pwconv([12])\.(weight|bias)", r"stages.\1.layers.\2.pointwise_conv\3.\4"),
    (r"stages\.(\d+)\.(\d+)\.gamma", r"stages.\1.layers.\2.gamma"),
    (r"norm\.(weight|bias)", r"layer_norm.\1"),
]


def _hf_name(ours: str) -> str:
    name = rename_key(ours, _HF_RENAMES)
    if name is None:
        raise CheckpointError(f"No transformers name for ConvNeXt parameter {ours!r}.")
    return name


def config_from_hf(hf_config: DINOv3ConvNextConfig, name_or_path: str = "") -> Dinov3HfConvNextConfig:
    """Our config for a transformers `DINOv3ConvNextConfig`; raises on settings our model cannot represent."""
    if hf_config.hidden_act != "gelu":
        raise CheckpointError(f"Unsupported hidden_act {hf_config.hidden_act!r} (DINOv3 ConvNeXt uses 'gelu').")
    if len(hf_config.depths) != NUM_STAGES or len(hf_config.hidden_sizes) != NUM_STAGES:
        raise CheckpointError(
            f"DINOv3 ConvNeXt has {NUM_STAGES} stages; this config has depths={hf_config.depths} and "
            f"hidden_sizes={hf_config.hidden_sizes}."
        )
    return Dinov3HfConvNextConfig(
        depths=list(hf_config.depths),
        hidden_sizes=list(hf_config.hidden_sizes),
        num_channels=hf_config.num_channels,
        layer_norm_eps=hf_config.layer_norm_eps,
        layerscale_init=hf_config.layer_scale_init_value,
        drop_path_rate=hf_config.drop_path_rate,
        initializer_range=hf_config.initializer_range,
        image_size=hf_config.image_size,
        pretraining_data="sat493m" if "sat493m" in str(name_or_path) else "lvd1689m",
    )


def config_to_hf(config: Dinov3HfConvNextConfig) -> DINOv3ConvNextConfig:
    """The transformers config of the same architecture; `patch_size` (get_intermediate_layers only) is dropped."""
    return DINOv3ConvNextConfig(
        num_channels=config.num_channels,
        hidden_sizes=list(config.hidden_sizes),
        depths=list(config.depths),
        hidden_act="gelu",
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        layer_scale_init_value=config.layerscale_init,
        drop_path_rate=config.drop_path_rate,
        image_size=config.image_size,
    )


def hf_to_ours(state: Mapping[str, torch.Tensor], config: Dinov3HfConvNextConfig) -> Thunks:
    """transformers keys (`stages.*` on disk, `model.stages.*` in memory; `layer_norm.*`) -> ours."""
    names = {re.sub(r"^model\.stages\.", "stages.", k): k for k in state}

    def get(name: str) -> torch.Tensor:
        if name not in names:
            raise CheckpointError(f"The transformers checkpoint has no tensor {name!r}.")
        return state[names[name]]

    return {key: (lambda n=_hf_name(key): get(n)) for key in expected_shapes(config)}


def ours_to_hf(state: Mapping[str, torch.Tensor], config: Dinov3HfConvNextConfig) -> Thunks:
    """Ours -> transformers' on-disk keys (one-to-one renames)."""
    return {_hf_name(key): (lambda k=key: state[k]) for key in state}


def expected_shapes(config: Dinov3HfConvNextConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of our state dict for `config`, computed on the meta device."""
    from ..models.convnext.modeling import Dinov3HfConvNextModel

    with torch.device("meta"):
        model = Dinov3HfConvNextModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
