"""Configuration of the DINOv3 Vision Transformer family, with one named preset per official release."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

from ...common import PRETRAINING_DATA
from ..pretrained import PretrainingDataMixin


# Official hub architectures (`dinov3/hub/backbones.py`). Fields not listed take the class defaults,
# which are the values shared by every release (patch 16, 4 registers, LayerNorm eps 1e-5, RoPE base 100, ...).
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vits16": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, ffn_type="mlp", ffn_ratio=4.0),
    "vits16plus": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, ffn_type="swiglu", ffn_ratio=6.0),
    "vitb16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_type="mlp", ffn_ratio=4.0),
    "vitl16": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_type="mlp", ffn_ratio=4.0),
    "vitl16plus": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_type="swiglu", ffn_ratio=6.0),
    "vith16plus": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=20, ffn_type="swiglu", ffn_ratio=6.0),
    "vit7b16": dict(
        hidden_size=4096, num_hidden_layers=40, num_attention_heads=32, ffn_type="swiglu", ffn_ratio=3.0,
        swiglu_align_to=64, qkv_bias=False, untie_global_and_local_cls_norm=True,
    ),
}
VIT_PRESETS["vitl16_sat"] = dict(VIT_PRESETS["vitl16"], untie_global_and_local_cls_norm=True, pretraining_data="sat493m")
VIT_PRESETS["vit7b16_sat"] = dict(VIT_PRESETS["vit7b16"], pretraining_data="sat493m")

# Hub repositories of the transformers-format releases, by preset.
VIT_HUB_IDS = {
    "vits16": "facebook/dinov3-vits16-pretrain-lvd1689m",
    "vits16plus": "facebook/dinov3-vits16plus-pretrain-lvd1689m",
    "vitb16": "facebook/dinov3-vitb16-pretrain-lvd1689m",
    "vitl16": "facebook/dinov3-vitl16-pretrain-lvd1689m",
    "vith16plus": "facebook/dinov3-vith16plus-pretrain-lvd1689m",
    "vit7b16": "facebook/dinov3-vit7b16-pretrain-lvd1689m",
    "vitl16_sat": "facebook/dinov3-vitl16-pretrain-sat493m",
    "vit7b16_sat": "facebook/dinov3-vit7b16-pretrain-sat493m",
}


@strict
class Dinov3HfViTConfig(PretrainingDataMixin, BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of [`Dinov3HfViTModel`].

    Structure: patch embedding (conv, stride `patch_size`) -> [CLS | `num_register_tokens` registers | patches]
    -> `num_hidden_layers` pre-norm blocks (attention with axial RoPE on patch tokens, LayerScale, MLP or SwiGLU FFN)
    -> final LayerNorm. There is no absolute position embedding.

    RoPE: `periods[k] = rope_base ** (4k / head_dim)` (k < head_dim/4), or a geometric range from
    `rope_min_period` to `rope_max_period` when `rope_base` is None. Patch-centre coordinates are normalised
    by `rope_normalize_coords` ("separate" | "max" | "min") to (-1, 1). In training mode only, the coordinates
    are shifted by U(-rope_shift, rope_shift), jittered per axis by a log-uniform factor in [1/rope_jitter, rope_jitter]
    and rescaled by one shared log-uniform factor in [1/rope_rescale, rope_rescale]; `None` switches each off.

    Backbone use (`AutoBackbone`, DPT, UperNet): `out_indices` select blocks (0 is the patch embedding, i is block i);
    `reshape_hidden_states=True` gives NCHW maps, False gives (B, 1 + N, C) sequences of CLS + patch tokens
    (registers dropped), the layout DPT expects.

    Args:
        hidden_size: token width D; divisible by `num_attention_heads`, with head_dim = D / heads divisible by 4.
        num_hidden_layers: number of blocks.
        num_attention_heads: attention heads per block.
        ffn_type: "mlp" (fc1 -> GELU -> fc2) or "swiglu" (w3(SiLU(w1 x) * w2 x)).
        ffn_ratio: FFN width over D (see `ffn_hidden_size`).
        swiglu_align_to: the SwiGLU width is rounded up to a multiple of this.
        patch_size: side p of the square patches (conv kernel and stride).
        num_channels: input image channels.
        num_register_tokens: register ("storage") tokens after CLS.
        qkv_bias, proj_bias, ffn_bias: biases of the qkv, attention output and FFN linears.
        mask_k_bias: with `qkv_bias`, multiply the key third of the qkv bias by the 0 mask `bias_mask`.
        layer_norm_eps: epsilon of every LayerNorm.
        layerscale_init: initial LayerScale gamma; None drops LayerScale.
        drop_path_rate: per-block stochastic-depth rate (training only).
        untie_global_and_local_cls_norm: a separate final norm (`local_cls_norm`) for CLS + registers of local crops.
        rope_base, rope_min_period, rope_max_period, rope_normalize_coords, rope_shift, rope_jitter, rope_rescale: the
            RoPE periods, coordinate normalisation and training augmentations above.
        rope_dtype: dtype of the RoPE periods and angles ("float32", "bfloat16", "float16" or "float64").
        initializer_range: std of the trunc-normal linear weights and N(0, std) CLS / register tokens of a fresh
            model (the patch embedding is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the mask token 0, gamma
            `layerscale_init`).
        image_size: the pretraining resolution (informative; any size works).
        pretraining_data: "lvd1689m" (web images) or "sat493m" (satellite), which fixes `image_mean` / `image_std`.
        out_features, out_indices: backbone stages to return (`stem`, `stage1`..; negative indices count from the end).
        reshape_hidden_states: backbone maps as NCHW (True) or (B, 1 + N, C) CLS + patch sequences (False).
        apply_layernorm: apply the final LayerNorm to each backbone map.
        pyramid_strides: None (default) returns the `out_indices` maps as they are. A list of ascending strides in
            pixels, each `patch_size * 2**k` with k in [-2, 2] (4, 8, 16, 32, 64 for 16-pixel patches), makes the
            backbone return one map per stride through the simple feature pyramid of ViTDet (Li et al. 2022,
            arXiv 2203.16527, Sec. 3; `feature_pyramid.py`). `out_indices` then names its source stages: one stage
            feeds every level (ViTDet), or one stage per stride, in order. Needs `reshape_hidden_states=True`.
        pyramid_channels: channels of every pyramid map (`backbone.channels == [pyramid_channels] * len(strides)`).
    """

    model_type = "dinov3_hf_vit"

    def __init__(
        self,
        hidden_size: int = 384,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 6,
        ffn_type: str = "mlp",
        ffn_ratio: float = 4.0,
        swiglu_align_to: int = 8,
        patch_size: int = 16,
        num_channels: int = 3,
        num_register_tokens: int = 4,
        qkv_bias: bool = True,
        mask_k_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        layer_norm_eps: float = 1e-5,
        layerscale_init: float | None = 1e-5,
        drop_path_rate: float = 0.0,
        untie_global_and_local_cls_norm: bool = False,
        rope_base: float | None = 100.0,
        rope_min_period: float | None = None,
        rope_max_period: float | None = None,
        rope_normalize_coords: str = "separate",
        rope_shift: float | None = None,
        rope_jitter: float | None = None,
        rope_rescale: float | None = 2.0,
        rope_dtype: str = "float32",
        initializer_range: float = 0.02,
        image_size: int = 224,
        pretraining_data: str = "lvd1689m",
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        reshape_hidden_states: bool = True,
        apply_layernorm: bool = True,
        pyramid_strides: list[int] | None = None,
        pyramid_channels: int = 256,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.ffn_type = ffn_type
        self.ffn_ratio = ffn_ratio
        self.swiglu_align_to = swiglu_align_to
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.num_register_tokens = num_register_tokens
        self.qkv_bias = qkv_bias
        self.mask_k_bias = mask_k_bias
        self.proj_bias = proj_bias
        self.ffn_bias = ffn_bias
        self.layer_norm_eps = layer_norm_eps
        self.layerscale_init = layerscale_init
        self.drop_path_rate = drop_path_rate
        self.untie_global_and_local_cls_norm = untie_global_and_local_cls_norm
        self.rope_base = rope_base
        self.rope_min_period = rope_min_period
        self.rope_max_period = rope_max_period
        self.rope_normalize_coords = rope_normalize_coords
        self.rope_shift = rope_shift
        self.rope_jitter = rope_jitter
        self.rope_rescale = rope_rescale
        self.rope_dtype = rope_dtype
        self.initializer_range = initializer_range
        self.image_size = image_size
        self.pretraining_data = pretraining_data
        self.reshape_hidden_states = reshape_hidden_states
        self.apply_layernorm = apply_layernorm
        self.pyramid_strides = list(pyramid_strides) if pyramid_strides is not None else None
        self.pyramid_channels = pyramid_channels
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, num_hidden_layers + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        self.validate_dinov3_vit()  # a plain ValueError here; `@strict` then runs every validator via `validate()`

    def validate_dinov3_vit(self) -> None:
        """Class validator (`@strict`: run by transformers' `validate()` after `__init__` and in `save_pretrained`):
        raise a ValueError naming the first inconsistent field."""
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}."
            )
        if self.head_dim % 4:
            raise ValueError(f"Axial RoPE needs head_dim divisible by 4; got head_dim={self.head_dim}.")
        if self.ffn_type not in ("mlp", "swiglu"):
            raise ValueError(f"ffn_type must be 'mlp' or 'swiglu', got {self.ffn_type!r}.")
        if (self.rope_base is None) == (self.rope_min_period is None or self.rope_max_period is None):
            raise ValueError(
                "Give RoPE periods either as rope_base, or as rope_min_period and rope_max_period (with rope_base=None)."
            )
        if self.rope_normalize_coords not in ("separate", "max", "min"):
            raise ValueError(
                f"rope_normalize_coords must be 'separate', 'max' or 'min', got {self.rope_normalize_coords!r}."
            )
        if self.rope_dtype not in ("float32", "bfloat16", "float16", "float64"):
            raise ValueError(f"rope_dtype must name a float dtype such as 'float32', got {self.rope_dtype!r}.")
        if self.pretraining_data not in PRETRAINING_DATA:
            raise ValueError(f"pretraining_data must be one of {PRETRAINING_DATA}, got {self.pretraining_data!r}.")
        if self.pyramid_strides is not None:
            self.check_pyramid()

    def check_pyramid(self) -> None:
        """Raise a ValueError naming the first pyramid field inconsistent with the rest of the config (also run by
        the backbone, since `from_pretrained(..., pyramid_strides=...)` sets fields after `__init__`)."""
        strides, p = self.pyramid_strides, self.patch_size
        allowed = [p * 2**k // 4 for k in range(5) if p * 2**k % 4 == 0]
        if not strides or any(not isinstance(s, int) or s not in allowed for s in strides):
            raise ValueError(
                f"pyramid_strides={strides}: each stride must be patch_size * 2**k with k in [-2, 2], i.e. one of "
                f"{allowed} for patch_size={p}; pass e.g. pyramid_strides={[s for s in allowed if s != p * 4]}."
            )
        if list(strides) != sorted(set(strides)):
            raise ValueError(
                f"pyramid_strides={strides} must be unique and ascending; pass {sorted(set(strides))}."
            )
        if len(self.out_indices) not in (1, len(strides)):
            raise ValueError(
                f"out_indices={self.out_indices} gives {len(self.out_indices)} source stages for {len(strides)} "
                f"pyramid strides; pass one index (that stage feeds every level) or {len(strides)} (one per stride)."
            )
        if not isinstance(self.pyramid_channels, int) or self.pyramid_channels <= 0:
            raise ValueError(f"pyramid_channels must be a positive int, got {self.pyramid_channels!r}.")
        if not self.reshape_hidden_states:
            raise ValueError("The feature pyramid works on NCHW maps; pass reshape_hidden_states=True.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def ffn_hidden_size(self) -> int:
        """Hidden width of the FFN: int(D * ratio); SwiGLU takes 2/3 of it rounded up to `swiglu_align_to`."""
        hidden = int(self.hidden_size * self.ffn_ratio)
        if self.ffn_type == "mlp":
            return hidden
        d = int(hidden * 2 / 3)
        return d + (-d) % self.swiglu_align_to

    @property
    def output_stride(self) -> int:
        """Pixels per output token along each side (inputs are floored to a multiple of it)."""
        return self.patch_size

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "Dinov3HfViTConfig":
        """Config of an official architecture (`vits16`, ..., `vit7b16_sat`); `overrides` replace preset fields."""
        if name not in VIT_PRESETS:
            raise ValueError(f"Unknown ViT preset {name!r}. Known presets: {', '.join(VIT_PRESETS)}.")
        return cls(**{**VIT_PRESETS[name], **overrides})
