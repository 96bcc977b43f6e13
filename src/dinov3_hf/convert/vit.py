"""ViT checkpoint formats: official Meta keys (= ours) and transformers' `dinov3_vit` layout.

Every converter maps a source state dict to `{target key: thunk}`; a thunk builds its tensor only when called,
so a writer can stream the conversion of large checkpoints shard by shard.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from transformers import DINOv3ViTConfig

from ..models.vit.configuration import VIT_PRESETS, Dinov3HfViTConfig
from ..models.vit.layers.rope import rope_periods
from .sources import CheckpointError, rename_key

Thunks = dict[str, Callable[[], torch.Tensor]]

_BLOCK = re.compile(r"^(?:model\.)?(?:blocks|layer)\.(\d+)\.")


def num_blocks(keys) -> int:
    """1 + the largest block index among `blocks.i.*` / `layer.i.*` keys."""
    indices = [int(m.group(1)) for k in keys if (m := _BLOCK.match(k))]
    if not indices:
        raise CheckpointError("The checkpoint has no transformer blocks (no `blocks.N.*` or `layer.N.*` keys).")
    return max(indices) + 1


# -- official <-> ours ----------------------------------------------------------------------------------------------


def config_from_official(state: Mapping[str, torch.Tensor], arch: str) -> Dinov3HfViTConfig:
    """The preset `arch` with its depth read from the keys; every field the shapes imply is checked against them."""
    preset = dict(VIT_PRESETS[arch])
    depth = num_blocks(state.keys())
    if depth > preset["num_hidden_layers"]:
        raise CheckpointError(f"The checkpoint has {depth} blocks but preset {arch!r} has {preset['num_hidden_layers']}.")
    periods = state.get("rope_embed.periods")
    rope_dtype = str(periods.dtype).removeprefix("torch.") if periods is not None else "float32"
    config = Dinov3HfViTConfig(**{**preset, "num_hidden_layers": depth, "rope_dtype": rope_dtype})

    found = {
        "hidden_size": _shape(state, "cls_token", -1),
        "num_register_tokens": _shape(state, "storage_tokens", 1),
        "patch_size": _shape(state, "patch_embed.proj.weight", -1),
        "num_channels": _shape(state, "patch_embed.proj.weight", 1),
        "head_dim": 4 * _shape(state, "rope_embed.periods", 0) if periods is not None else None,
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "mask_k_bias": "blocks.0.attn.qkv.bias_mask" in state if "blocks.0.attn.qkv.bias" in state else None,
        "ffn_type": "swiglu" if "blocks.0.mlp.w1.weight" in state else "mlp",
        "ffn_hidden_size": _shape(state, "blocks.0.mlp.w1.weight" if "blocks.0.mlp.w1.weight" in state else "blocks.0.mlp.fc1.weight", 0),
        "untie_global_and_local_cls_norm": "local_cls_norm.weight" in state,
    }
    wrong = [
        f"{name}: checkpoint {value}, preset {getattr(config, name)}"
        for name, value in found.items()
        if value is not None and value != getattr(config, name)
    ]
    if wrong:
        raise CheckpointError(
            f"The checkpoint does not match preset {arch!r}: " + "; ".join(wrong) + ". Pick the preset of this "
            f"checkpoint with --arch (one of {', '.join(VIT_PRESETS)}); SAT checkpoints use the *_sat presets."
        )
    return config


def _shape(state: Mapping[str, torch.Tensor], key: str, dim: int) -> int | None:
    return state[key].shape[dim] if key in state else None


def official_to_ours(state: Mapping[str, torch.Tensor], config: Dinov3HfViTConfig) -> Thunks:
    """Identity: our parameter names are the official ones."""
    return {key: (lambda k=key: state[k]) for key in state}


ours_to_official = official_to_ours


# -- transformers (`dinov3_vit`) <-> ours -------------------------------------------------------------------------

_HF_RENAMES = [  # (ours, transformers) regex pairs for one-to-one tensors; block index as \1
    (r"cls_token", "embeddings.cls_token"),
    (r"storage_tokens", "embeddings.register_tokens"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.\1"),
    (r"norm\.(weight|bias)", r"norm.\1"),
    (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"layer.\1.norm\2.\3"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"layer.\1.attention.o_proj.\2"),
    (r"blocks\.(\d+)\.ls([12])\.gamma", r"layer.\1.layer_scale\2.lambda1"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"layer.\1.mlp.up_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"layer.\1.mlp.down_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.w1\.(weight|bias)", r"layer.\1.mlp.gate_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.w2\.(weight|bias)", r"layer.\1.mlp.up_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.w3\.(weight|bias)", r"layer.\1.mlp.down_proj.\2"),
]


def _hf_name(ours: str, ffn_type: str) -> str | None:
    renames = [
        (pattern, target) for pattern, target in _HF_RENAMES
        if not ((".fc" in pattern and ffn_type != "mlp") or (".w" in pattern and ffn_type != "swiglu"))
    ]
    return rename_key(ours, renames)


def config_from_hf(hf_config: DINOv3ViTConfig, name_or_path: str = "") -> Dinov3HfViTConfig:
    """Our config for a transformers `DINOv3ViTConfig`; raises on settings our model cannot represent."""
    gated = bool(hf_config.use_gated_mlp)
    expected_act = "silu" if gated else "gelu"
    if hf_config.hidden_act != expected_act:
        raise CheckpointError(f"Unsupported hidden_act {hf_config.hidden_act!r} (expected {expected_act!r}).")
    if hf_config.query_bias != hf_config.value_bias:
        raise CheckpointError("query_bias and value_bias differ; DINOv3 uses both or neither.")
    size, inter = hf_config.hidden_size, hf_config.intermediate_size
    config = Dinov3HfViTConfig(
        hidden_size=size,
        num_hidden_layers=hf_config.num_hidden_layers,
        num_attention_heads=hf_config.num_attention_heads,
        ffn_type="swiglu" if gated else "mlp",
        ffn_ratio=1.5 * inter / size if gated else inter / size,
        swiglu_align_to=next(a for a in (64, 8, 1) if inter % a == 0),
        patch_size=hf_config.patch_size,
        num_channels=hf_config.num_channels,
        num_register_tokens=hf_config.num_register_tokens,
        qkv_bias=hf_config.query_bias,
        mask_k_bias=not hf_config.key_bias,
        proj_bias=hf_config.proj_bias,
        ffn_bias=hf_config.mlp_bias,
        layer_norm_eps=hf_config.layer_norm_eps,
        layerscale_init=hf_config.layerscale_value,
        drop_path_rate=hf_config.drop_path_rate,
        rope_base=hf_config.rope_theta,
        rope_shift=hf_config.pos_embed_shift,
        rope_jitter=hf_config.pos_embed_jitter,
        rope_rescale=hf_config.pos_embed_rescale,
        initializer_range=hf_config.initializer_range,
        image_size=hf_config.image_size,
        pretraining_data="sat493m" if "sat493m" in str(name_or_path) else "lvd1689m",
    )
    if config.ffn_hidden_size != inter:
        raise CheckpointError(f"intermediate_size={inter} cannot be expressed as a DINOv3 FFN width for hidden_size={size}.")
    return config


def config_to_hf(config: Dinov3HfViTConfig) -> DINOv3ViTConfig:
    """The transformers config of the same architecture (training-only fields such as local_cls_norm are dropped)."""
    if config.rope_base is None or config.rope_normalize_coords != "separate":
        raise CheckpointError("transformers' DINOv3ViTModel supports only rope_base periods with 'separate' coordinates.")
    return DINOv3ViTConfig(
        hidden_size=config.hidden_size,
        intermediate_size=config.ffn_hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        hidden_act="silu" if config.ffn_type == "swiglu" else "gelu",
        use_gated_mlp=config.ffn_type == "swiglu",
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        num_register_tokens=config.num_register_tokens,
        query_bias=config.qkv_bias,
        key_bias=config.qkv_bias and not config.mask_k_bias,
        value_bias=config.qkv_bias,
        proj_bias=config.proj_bias,
        mlp_bias=config.ffn_bias,
        layer_norm_eps=config.layer_norm_eps,
        layerscale_value=config.layerscale_init or 1.0,
        drop_path_rate=config.drop_path_rate,
        rope_theta=config.rope_base,
        pos_embed_shift=config.rope_shift,
        pos_embed_jitter=config.rope_jitter,
        pos_embed_rescale=config.rope_rescale,
        initializer_range=config.initializer_range,
        image_size=config.image_size,
    )


def hf_to_ours(state: Mapping[str, torch.Tensor], config: Dinov3HfViTConfig) -> Thunks:
    """transformers keys (`layer.N.*` on disk, `model.layer.N.*` in memory) -> ours; q/k/v are fused into qkv.

    The key bias, absent from transformers checkpoints, becomes zeros (it is masked anyway); `bias_mask` and the
    RoPE periods are rebuilt; `local_cls_norm` (training only) does not exist in this direction.
    """
    names = {re.sub(r"^model\.layer\.", "layer.", k): k for k in state}

    def get(name: str) -> torch.Tensor:
        if name not in names:
            raise CheckpointError(f"The transformers checkpoint has no tensor {name!r}.")
        return state[names[name]]

    def qkv(prefix: str, kind: str) -> torch.Tensor:
        q, v = get(f"{prefix}q_proj.{kind}"), get(f"{prefix}v_proj.{kind}")
        k = get(f"{prefix}k_proj.{kind}") if kind == "weight" or f"{prefix}k_proj.bias" in names else torch.zeros_like(q)
        return torch.cat([q, k, v])

    periods = lambda: rope_periods(  # noqa: E731
        config.head_dim, config.rope_base, config.rope_min_period, config.rope_max_period, getattr(torch, config.rope_dtype)
    )
    thunks: Thunks = {"mask_token": lambda: get("embeddings.mask_token").reshape(1, -1), "rope_embed.periods": periods}
    for key in expected_shapes(config):
        if (m := re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key)) is not None:
            thunks[key] = lambda p=f"layer.{m.group(1)}.attention.", kind=m.group(2): qkv(p, kind)
        elif key.endswith("bias_mask"):
            thunks[key] = lambda: torch.tensor([1.0, 0.0, 1.0]).repeat_interleave(config.hidden_size)
        elif (name := _hf_name(key, config.ffn_type)) is not None:
            thunks[key] = lambda n=name: get(n)
    return thunks


def ours_to_hf(state: Mapping[str, torch.Tensor], config: Dinov3HfViTConfig) -> Thunks:
    """Ours -> transformers' on-disk keys. Drops `bias_mask`, the (masked) key bias, the periods and local_cls_norm."""
    dim = config.hidden_size
    thunks: Thunks = {"embeddings.mask_token": lambda: state["mask_token"].reshape(1, 1, -1)}
    for key in state:
        if (m := re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key)) is not None:
            prefix, kind = f"layer.{m.group(1)}.attention.", m.group(2)
            for j, proj in enumerate("qkv"):
                if kind == "weight" or proj != "k" or not config.mask_k_bias:
                    thunks[f"{prefix}{proj}_proj.{kind}"] = lambda k=key, j=j: state[k][j * dim : (j + 1) * dim].clone()
        elif (name := _hf_name(key, config.ffn_type)) is not None:
            thunks[name] = lambda k=key: state[k]
    return thunks


def expected_shapes(config: Dinov3HfViTConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of our state dict for `config`, computed on the meta device."""
    from ..models.vit.modeling import Dinov3HfViTModel

    with torch.device("meta"):
        model = Dinov3HfViTModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
