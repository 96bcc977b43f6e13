"""Configuration of the DINOv3 Vision Transformer family, with one named preset per official release."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

from ..pretrained import PRETRAINING_DATA, PretrainingDataMixin


# Official hub architectures (official_dinov3.md §1.1). Fields not listed take the class defaults,
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
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, num_hidden_layers + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first inconsistent field."""
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
