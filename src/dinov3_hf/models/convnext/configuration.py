"""Configuration of the DINOv3 ConvNeXt family (the distilled ConvNeXt students), one preset per official release."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

from ...common import PRETRAINING_DATA
from ..pretrained import PretrainingDataMixin

# Official hub architectures (`convnext_sizes` in `dinov3/models/convnext.py`). Other fields take the class defaults.
CONVNEXT_PRESETS: dict[str, dict[str, Any]] = {
    "convnext_tiny": dict(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768]),
    "convnext_small": dict(depths=[3, 3, 27, 3], hidden_sizes=[96, 192, 384, 768]),
    "convnext_base": dict(depths=[3, 3, 27, 3], hidden_sizes=[128, 256, 512, 1024]),
    "convnext_large": dict(depths=[3, 3, 27, 3], hidden_sizes=[192, 384, 768, 1536]),
}

# Hub repositories of the transformers-format releases, by preset.
CONVNEXT_HUB_IDS = {
    name: f"facebook/dinov3-convnext-{name.removeprefix('convnext_')}-pretrain-lvd1689m" for name in CONVNEXT_PRESETS
}

NUM_STAGES = 4


@strict
class Dinov3HfConvNextConfig(PretrainingDataMixin, BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of [`Dinov3HfConvNextModel`].

    Structure: 4 stages at strides 4, 8, 16, 32. Stage i = downsampling (stage 0: conv 4x4/4 -> channels-first
    LayerNorm; others: channels-first LayerNorm -> conv 2x2/2) then `depths[i]` ConvNeXt blocks of width
    `hidden_sizes[i]` (depthwise conv 7x7 -> LayerNorm -> Linear 4C -> GELU -> Linear C -> * gamma, residual).
    Outputs: final LayerNorm over [global average pool ; stride-32 tokens]. Drop-path rates rise linearly from 0 to
    `drop_path_rate` over all blocks; gamma starts at `layerscale_init`.

    `patch_size` (None in the releases, 16 in the distillation recipes) only affects `get_intermediate_layers`: the
    selected maps are resized (bilinear, antialiased) to (H // patch_size, W // patch_size), like a ViT's patch grid.

    Backbone use (`AutoBackbone`, UperNet, Mask2Former): stage names are `stem` (the input pixels, as in
    transformers' DINOv3ConvNextBackbone) and `stage1`..`stage4`; feature maps are the NCHW stage outputs.

    Args:
        depths: blocks per stage, 4 ints >= 0 (default ConvNeXt-Tiny's [3, 3, 9, 3]).
        hidden_sizes: widths of the 4 stages, ints >= 1 (default [96, 192, 384, 768]).
        num_channels: input image channels.
        layer_norm_eps: epsilon of every LayerNorm.
        layerscale_init: initial gamma of each block.
        drop_path_rate: the stochastic-depth rate of the last block (training only).
        patch_size: None, or the grid `get_intermediate_layers` resizes its maps to (see above).
        initializer_range: std of the trunc-normal conv and linear weights of a fresh model (biases 0, norms 1 / 0).
        image_size: the pretraining resolution (informative; any size >= 32 works).
        pretraining_data: "lvd1689m" (web images) or "sat493m" (satellite), which fixes `image_mean` / `image_std`.
        out_features, out_indices: backbone stages to return (`stem`, `stage1`..`stage4`; negative indices count
            from the end).
    """

    model_type = "dinov3_hf_convnext"

    def __init__(
        self,
        depths: list[int] | None = None,
        hidden_sizes: list[int] | None = None,
        num_channels: int = 3,
        layer_norm_eps: float = 1e-6,
        layerscale_init: float = 1e-6,
        drop_path_rate: float = 0.0,
        patch_size: int | None = None,
        initializer_range: float = 0.02,
        image_size: int = 224,
        pretraining_data: str = "lvd1689m",
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.depths = list(depths) if depths is not None else list(CONVNEXT_PRESETS["convnext_tiny"]["depths"])
        self.hidden_sizes = (
            list(hidden_sizes) if hidden_sizes is not None else list(CONVNEXT_PRESETS["convnext_tiny"]["hidden_sizes"])
        )
        self.num_channels = num_channels
        self.layer_norm_eps = layer_norm_eps
        self.layerscale_init = layerscale_init
        self.drop_path_rate = drop_path_rate
        self.patch_size = patch_size
        self.initializer_range = initializer_range
        self.image_size = image_size
        self.pretraining_data = pretraining_data
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, NUM_STAGES + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        self.validate_dinov3_convnext()  # a plain ValueError here; `@strict` then runs every validator via `validate()`

    def validate_dinov3_convnext(self) -> None:
        """Class validator (`@strict`: run by transformers' `validate()` after `__init__` and in `save_pretrained`):
        raise a ValueError naming the first inconsistent field."""
        if len(self.depths) != NUM_STAGES or len(self.hidden_sizes) != NUM_STAGES:
            raise ValueError(
                f"DINOv3 ConvNeXt has {NUM_STAGES} stages: depths and hidden_sizes need {NUM_STAGES} entries each, got "
                f"depths={self.depths} and hidden_sizes={self.hidden_sizes}."
            )
        if any(d < 0 for d in self.depths) or any(c < 1 for c in self.hidden_sizes):
            raise ValueError(f"depths must be >= 0 and hidden_sizes >= 1, got {self.depths} and {self.hidden_sizes}.")
        if self.patch_size is not None and self.patch_size < 1:
            raise ValueError(f"patch_size must be a positive int or None, got {self.patch_size}.")
        if self.pretraining_data not in PRETRAINING_DATA:
            raise ValueError(f"pretraining_data must be one of {PRETRAINING_DATA}, got {self.pretraining_data!r}.")

    @property
    def hidden_size(self) -> int:
        """Width of the final features (pooled output and stride-32 tokens), `hidden_sizes[-1]`."""
        return self.hidden_sizes[-1]

    @property
    def num_stages(self) -> int:
        return NUM_STAGES

    @property
    def output_stride(self) -> int:
        """Pixels per output token along each side: the stem's 4 times three 2x downsamplings."""
        return 32

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "Dinov3HfConvNextConfig":
        """Config of an official architecture (`convnext_tiny`, ..., `convnext_large`); `overrides` replace fields."""
        if name not in CONVNEXT_PRESETS:
            raise ValueError(f"Unknown ConvNeXt preset {name!r}. Known presets: {', '.join(CONVNEXT_PRESETS)}.")
        return cls(**{**CONVNEXT_PRESETS[name], **overrides})
